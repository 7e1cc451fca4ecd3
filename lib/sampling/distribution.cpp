#include "sampling/distribution.hpp"

#include <cmath>
#include <limits>

#include "tensor/error.hpp"

namespace heads::sampling {

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
