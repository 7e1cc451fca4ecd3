#pragma once
// RMSNorm as Llama computes it: y = x / sqrt(mean(x²) + eps) · weight, in float.

#include <cstdint>

namespace heads {

struct RmsNormArgs {
    float* y;              // [rows, d_model]; may equal x
    const float* x;        // [rows, d_model]
    const float* weight;   // [d_model]
    std::int64_t rows;
    std::int64_t d_model;
    float eps;
};

void rms_norm(const RmsNormArgs& args);

}  // namespace heads
