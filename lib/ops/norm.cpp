#include "ops/norm.hpp"

#include <cmath>

namespace heads {

void rms_norm(const RmsNormArgs& a) {
#pragma omp parallel for schedule(static) if (a.rows > 4)
    for (std::int64_t row = 0; row < a.rows; ++row) {
        const float* x = a.x + row * a.d_model;
        float* y = a.y + row * a.d_model;
        float sum = 0.0f;
#pragma omp simd reduction(+ : sum)
        for (std::int64_t i = 0; i < a.d_model; ++i) sum += x[i] * x[i];
        const float scale = 1.0f / std::sqrt(sum / float(a.d_model) + a.eps);
#pragma omp simd
        for (std::int64_t i = 0; i < a.d_model; ++i) y[i] = x[i] * scale * a.weight[i];
    }
}

}  // namespace heads
