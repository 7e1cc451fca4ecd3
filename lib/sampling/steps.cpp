#include "sampling/steps.hpp"

#include <algorithm>
#include <cmath>
#include <limits>

#include <fmt/format.h>

#include "sampling/distribution.hpp"

namespace heads::sampling {
namespace {

constexpr float kRemoved = -std::numeric_limits<float>::infinity();

// The ids of the tokens still present, in `order`.
void present_tokens(std::span<const float> logits, std::vector<std::int32_t>& order) {
    order.clear();
    for (std::size_t i = 0; i < logits.size(); ++i)
        if (logits[i] != kRemoved) order.push_back(std::int32_t(i));
}

// Keeps order[0, keep) and removes every other token of `order`.
void remove_after(std::span<float> logits, std::span<const std::int32_t> order, std::size_t keep) {
    for (std::size_t i = keep; i < order.size(); ++i) logits[order[i]] = kRemoved;
}

// Keeps the shortest prefix of `order` whose probability mass reaches `mass`
// (the token that crosses it included, at least one token).
void keep_mass(std::span<float> logits, std::span<const std::int32_t> order, std::span<const float> probs, float mass) {
    double running = 0;
    std::size_t keep = 0;
    while (keep < order.size() && running < mass) running += probs[order[keep++]];
    remove_after(logits, order, std::max<std::size_t>(keep, 1));
}

// The distribution the logits give now, in scratch.probs.
const std::vector<float>& probabilities(std::span<const float> logits, Scratch& scratch) {
    scratch.probs.resize(logits.size());
    softmax(scratch.probs, logits);
    return scratch.probs;
}

}  // namespace

void LogitBias::apply(std::span<float> logits, std::span<const std::int32_t>, Scratch&) const {
    for (const auto& [token, bias] : bias_)
        if (token >= 0 && std::size_t(token) < logits.size()) logits[token] += bias;
}

std::string LogitBias::describe() const {
    return fmt::format("logit-bias({} tokens)", bias_.size());
}

void Penalties::apply(std::span<float> logits, std::span<const std::int32_t> history, Scratch& scratch) const {
    const std::size_t n = last_n_ < 0 ? history.size() : std::min(history.size(), std::size_t(last_n_));
    const auto window = history.last(n);
    auto& counts = scratch.counts;
    if (counts.size() < logits.size()) counts.assign(logits.size(), 0);
    for (const auto token : window) ++counts[token];
    for (const auto token : window) {
        const std::uint32_t count = counts[token];
        if (count == 0) continue;  // done already
        counts[token] = 0;
        float& l = logits[token];
        if (l == kRemoved) continue;
        l = l > 0 ? l / repeat_ : l * repeat_;
        l -= presence_ + float(count) * frequency_;
    }
}

std::string Penalties::describe() const {
    return fmt::format("penalties(repeat {}, presence {}, frequency {}, last {})", repeat_, presence_, frequency_,
                       last_n_ < 0 ? std::string("all") : std::to_string(last_n_));
}

void NoRepeatNgram::apply(std::span<float> logits, std::span<const std::int32_t> history, Scratch&) const {
    const std::size_t n = std::size_t(n_);
    if (n == 0 || history.size() + 1 < n) return;
    // The n-1 tokens the next one would complete an n-gram with.
    const auto prefix = history.last(n - 1);
    for (std::size_t start = 0; start + n <= history.size(); ++start) {
        if (std::equal(prefix.begin(), prefix.end(), history.begin() + std::ptrdiff_t(start)))
            logits[history[start + n - 1]] = kRemoved;
    }
}

std::string NoRepeatNgram::describe() const {
    return fmt::format("no-repeat-ngram({})", n_);
}

void Temperature::apply(std::span<float> logits, std::span<const std::int32_t>, Scratch&) const {
    const float scale = 1.0f / t_;
    for (auto& l : logits) l *= scale;  // -inf stays -inf
}

std::string Temperature::describe() const {
    return fmt::format("temperature({})", t_);
}

void TopK::apply(std::span<float> logits, std::span<const std::int32_t>, Scratch& scratch) const {
    auto& order = scratch.order;
    present_tokens(logits, order);
    const std::size_t k = std::size_t(k_);
    if (k == 0 || order.size() <= k) return;
    const auto more_likely = [&](std::int32_t a, std::int32_t b) {
        return logits[a] > logits[b] || (logits[a] == logits[b] && a < b);
    };
    std::nth_element(order.begin(), order.begin() + std::ptrdiff_t(k), order.end(), more_likely);
    remove_after(logits, order, k);
}

std::string TopK::describe() const {
    return fmt::format("top-k({})", k_);
}

void TopP::apply(std::span<float> logits, std::span<const std::int32_t>, Scratch& scratch) const {
    if (p_ >= 1) return;
    const auto& probs = probabilities(logits, scratch);
    auto& order = scratch.order;
    present_tokens(logits, order);
    std::sort(order.begin(), order.end(),
              [&](std::int32_t a, std::int32_t b) { return probs[a] > probs[b] || (probs[a] == probs[b] && a < b); });
    keep_mass(logits, order, probs, p_);
}

std::string TopP::describe() const {
    return fmt::format("top-p({})", p_);
}

void MinP::apply(std::span<float> logits, std::span<const std::int32_t>, Scratch& scratch) const {
    if (p_ <= 0) return;
    const auto& probs = probabilities(logits, scratch);
    const float floor = p_ * probs[argmax(probs)];
    for (std::size_t i = 0; i < logits.size(); ++i)
        if (probs[i] < floor) logits[i] = kRemoved;
}

std::string MinP::describe() const {
    return fmt::format("min-p({})", p_);
}

void TypicalP::apply(std::span<float> logits, std::span<const std::int32_t>, Scratch& scratch) const {
    if (p_ >= 1) return;
    const auto& probs = probabilities(logits, scratch);
    const double h = entropy(probs);
    auto& order = scratch.order;
    present_tokens(logits, order);
    // Distance of each token's surprisal from the entropy; a removed token
    // never gets here. Computed in the comparator: cheap next to the sort.
    const auto distance = [&](std::int32_t t) { return std::abs(-std::log(double(probs[t])) - h); };
    std::sort(order.begin(), order.end(), [&](std::int32_t a, std::int32_t b) {
        const double da = distance(a), db = distance(b);
        return da < db || (da == db && a < b);
    });
    keep_mass(logits, order, probs, p_);
}

std::string TypicalP::describe() const {
    return fmt::format("typical-p({})", p_);
}

}  // namespace heads::sampling
