#pragma once
// Rotary position embedding in the Hugging Face layout: dimension i of a head
// pairs with i + head_dim/2 ("rotate half"), angle = position · inv_freq[i].
// inv_freq follows transformers' rope_scaling types of Llama 2/3 configs.

#include <cstdint>
#include <span>
#include <string>

namespace heads {

enum class RopeScalingType { none, linear, dynamic, llama3 };

struct RopeScaling {
    RopeScalingType type = RopeScalingType::none;
    double factor = 1.0;
    double low_freq_factor = 1.0;    // llama3
    double high_freq_factor = 4.0;   // llama3
    std::int64_t original_max_position_embeddings = 0;  // llama3 (and dynamic, when given)
};

struct Rope {
    std::int64_t head_dim = 0;
    double theta = 10000.0;
    std::int64_t max_position_embeddings = 0;
    RopeScaling scaling;
};

std::string rope_scaling_name(RopeScalingType type);

// inv_freq [head_dim/2] for a forward pass whose largest position is
// seq_len - 1 (only "dynamic" scaling depends on it, as in transformers).
void rope_inv_freq(std::span<double> inv_freq, const Rope& rope, std::int64_t seq_len);

// cos and sin [positions, head_dim/2] of each position's angles (computed in double).
void rope_tables(float* cos, float* sin, std::span<const std::int32_t> positions, std::span<const double> inv_freq);

struct RopeApplyArgs {
    float* x;                 // head h of row r at x + r*row_stride + h*head_dim
    std::int64_t rows;
    std::int64_t row_stride;
    std::int64_t n_heads;
    std::int64_t head_dim;
    const float* cos;         // [rows, head_dim/2]
    const float* sin;         // [rows, head_dim/2]
};

void rope_apply(const RopeApplyArgs& args);

}  // namespace heads
