#include "ops/activation.hpp"

#include <algorithm>
#include <cmath>

#include "ops/fast_exp.hpp"

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

void softmax(float* row, std::int64_t n) {
    if (n <= 0) return;
    const float top = *std::max_element(row, row + n);
    double sum = 0.0;
    for (std::int64_t i = 0; i < n; ++i) {
        row[i] = std::exp(row[i] - top);
        sum += row[i];
    }
    const float scale = float(1.0 / sum);
    for (std::int64_t i = 0; i < n; ++i) row[i] *= scale;
}

void log_softmax(float* row, std::int64_t n) {
    if (n <= 0) return;
    const float top = *std::max_element(row, row + n);
    double sum = 0.0;
    for (std::int64_t i = 0; i < n; ++i) sum += std::exp(double(row[i]) - top);
    const double log_sum = double(top) + std::log(sum);
    for (std::int64_t i = 0; i < n; ++i) row[i] = float(double(row[i]) - log_sum);
}

}  // namespace heads
