#pragma once
// exp(x) for float, branch-free so that loops over it vectorize: 2^k · p(r)
// with k = round(x / ln 2), |r| <= ln 2 / 2 and p the degree-7 Taylor
// polynomial (relative error below 2e-7, about 1-2 ulp). Inputs below -87.5
// (including -inf) give exactly 0; inputs above 88 give about 1.7e38.

#include <bit>
#include <cstdint>

namespace heads {

inline float fast_exp(float x) {
    const float clamped = x < -87.5f ? -87.5f : (x > 88.0f ? 88.0f : x);
    const float k = __builtin_floorf(clamped * 1.44269504088896341f + 0.5f);
    const float r = clamped - k * 0.693145751953125f - k * 1.42860682030941723212e-6f;
    float p = 1.0f / 5040.0f;
    p = p * r + 1.0f / 720.0f;
    p = p * r + 1.0f / 120.0f;
    p = p * r + 1.0f / 24.0f;
    p = p * r + 1.0f / 6.0f;
    p = p * r + 0.5f;
    p = p * r + 1.0f;
    p = p * r + 1.0f;
    const float scale = std::bit_cast<float>(std::int32_t((std::int32_t(k) + 127) << 23));
    return x < -87.5f ? 0.0f : p * scale;
}

}  // namespace heads
