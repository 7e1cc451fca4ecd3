#include "ops/rope.hpp"

#include <cmath>
#include <numbers>
#include <stdexcept>

namespace heads {

std::string rope_scaling_name(RopeScalingType type) {
    switch (type) {
    case RopeScalingType::none: return "none";
    case RopeScalingType::linear: return "linear";
    case RopeScalingType::dynamic: return "dynamic";
    case RopeScalingType::llama3: return "llama3";
    }
    return "?";
}

void rope_inv_freq(std::span<double> inv_freq, const Rope& rope, std::int64_t seq_len) {
    const std::int64_t half = rope.head_dim / 2;
    if (std::int64_t(inv_freq.size()) != half) throw std::invalid_argument("rope_inv_freq: wrong table size");
    const double dim = double(rope.head_dim);
    double base = rope.theta;
    const RopeScaling& s = rope.scaling;
    if (s.type == RopeScalingType::dynamic) {
        // transformers' _compute_dynamic_ntk_parameters, with seq_len = max(position) + 1
        const double trained = double(rope.max_position_embeddings);
        const double length = std::max(double(seq_len), trained);
        base = rope.theta * std::pow(s.factor * length / trained - (s.factor - 1.0), dim / (dim - 2.0));
    }
    for (std::int64_t i = 0; i < half; ++i) inv_freq[std::size_t(i)] = 1.0 / std::pow(base, double(2 * i) / dim);
    if (s.type == RopeScalingType::linear) {
        for (auto& f : inv_freq) f /= s.factor;
    } else if (s.type == RopeScalingType::llama3) {
        const double old_context = double(s.original_max_position_embeddings);
        const double low_freq_wavelen = old_context / s.low_freq_factor;
        const double high_freq_wavelen = old_context / s.high_freq_factor;
        for (auto& f : inv_freq) {
            const double wavelen = 2.0 * std::numbers::pi / f;
            if (wavelen > low_freq_wavelen) {
                f = f / s.factor;
            } else if (wavelen >= high_freq_wavelen) {
                const double smooth = (old_context / wavelen - s.low_freq_factor) / (s.high_freq_factor - s.low_freq_factor);
                f = (1.0 - smooth) * f / s.factor + smooth * f;
            }
        }
    }
}

void rope_tables(float* cos, float* sin, std::span<const std::int32_t> positions, std::span<const double> inv_freq) {
    const std::size_t half = inv_freq.size();
    for (std::size_t r = 0; r < positions.size(); ++r)
        for (std::size_t i = 0; i < half; ++i) {
            const double angle = double(positions[r]) * inv_freq[i];
            cos[r * half + i] = float(std::cos(angle));
            sin[r * half + i] = float(std::sin(angle));
        }
}

void rope_apply(const RopeApplyArgs& a) {
    const std::int64_t half = a.head_dim / 2;
#pragma omp parallel for schedule(static) if (a.rows > 4)
    for (std::int64_t r = 0; r < a.rows; ++r) {
        const float* c = a.cos + r * half;
        const float* s = a.sin + r * half;
        for (std::int64_t h = 0; h < a.n_heads; ++h) {
            float* x = a.x + r * a.row_stride + h * a.head_dim;
#pragma omp simd
            for (std::int64_t i = 0; i < half; ++i) {
                const float x0 = x[i], x1 = x[i + half];
                x[i] = x0 * c[i] - x1 * s[i];
                x[i + half] = x1 * c[i] + x0 * s[i];
            }
        }
    }
}

}  // namespace heads
