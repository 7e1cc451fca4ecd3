#include "sampling/distribution.hpp"

#include <cmath>

#include "tensor/error.hpp"

namespace heads::sampling {

std::int32_t draw(std::span<const float> weights, double u) {
    double total = 0;
    for (const float w : weights) total += w;
    if (!(total > 0)) throw Error("cannot draw from a distribution with no mass");
    const double target = u * total;
    double running = 0;
    std::int32_t last = -1;
    for (std::size_t i = 0; i < weights.size(); ++i) {
        if (weights[i] <= 0) continue;
        running += weights[i];
        last = std::int32_t(i);
        if (running > target) return last;
    }
    return last;  // rounding left target at the very end
}

double entropy(std::span<const float> probs) {
    double h = 0;
    for (const float p : probs)
        if (p > 0) h -= double(p) * std::log(double(p));
    return h;
}

}  // namespace heads::sampling
