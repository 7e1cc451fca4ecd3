#include "ops/activation.hpp"

#include <cmath>
#include <limits>

#include "ops/fast_exp.hpp"
#include "tensor/error.hpp"

namespace heads {

void swiglu(float* y, const float* gate_up, std::int64_t rows, std::int64_t d_ff) {
#pragma omp parallel for schedule(static) if (rows > 4)
    for (std::int64_t r = 0; r < rows; ++r) {
        const float* gate = gate_up + r * 2 * d_ff;
        const float* up = gate + d_ff;
        float* out = y + r * d_ff;
#pragma omp simd
        for (std::int64_t i = 0; i < d_ff; ++i) out[i] = gate[i] / (1.0f + fast_exp(-gate[i])) * up[i];
    }
}

namespace {

float max_of(std::span<const float> values) {
    float best = -std::numeric_limits<float>::infinity();
    for (const float v : values) best = v > best ? v : best;
    return best;
}

}  // namespace

void softmax(std::span<float> probs, std::span<const float> logits) {
    const float top = max_of(logits);
    if (!std::isfinite(top)) throw Error("every token was removed from the distribution");
    double sum = 0;
    for (std::size_t i = 0; i < logits.size(); ++i) {
        const float e = std::isinf(logits[i]) ? 0.0f : std::exp(logits[i] - top);
        probs[i] = e;
        sum += e;
    }
    const float scale = float(1.0 / sum);
    for (auto& p : probs) p *= scale;
}

void log_softmax(std::span<float> out, std::span<const float> logits) {
    const float top = max_of(logits);
    if (!std::isfinite(top)) throw Error("every token was removed from the distribution");
    double sum = 0;
    for (const float v : logits)
        if (!std::isinf(v)) sum += std::exp(double(v) - top);
    const double log_sum = std::log(sum) + top;
    for (std::size_t i = 0; i < logits.size(); ++i) out[i] = float(double(logits[i]) - log_sum);
}

std::int32_t argmax(std::span<const float> values) {
    std::int32_t best = 0;
    for (std::size_t i = 1; i < values.size(); ++i)
        if (values[i] > values[best]) best = std::int32_t(i);
    return best;
}

}  // namespace heads
