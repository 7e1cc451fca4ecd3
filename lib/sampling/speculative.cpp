#include "sampling/speculative.hpp"

#include <algorithm>

#include "tensor/error.hpp"

namespace heads::sampling {

bool accept_draft(std::span<float> p, std::span<const float> q, std::int32_t x, Rng& rng) {
    double p_total = 0;
    for (const float v : p) p_total += v;
    if (!(p_total > 0)) throw Error("speculative verification: the target distribution has no mass");
    const double px = p[x] / p_total;
    const double qx = q.empty() ? 1.0 : double(q[x]);
    // Certain outcomes draw no random number, so greedy uses none at all.
    if (px >= qx) return true;
    if (px > 0 && rng.uniform() * qx < px) return true;
    if (q.empty()) {
        p[x] = 0;
    } else {
        double residual_total = 0;
        for (std::size_t i = 0; i < p.size(); ++i) {
            p[i] = std::max(0.0f, float(p[i] / p_total) - q[i]);
            residual_total += p[i];
        }
        // p <= q everywhere means p == q: then x could not be rejected.
        if (!(residual_total > 0)) throw Error("speculative verification: empty residual distribution");
    }
    return false;
}

}  // namespace heads::sampling
