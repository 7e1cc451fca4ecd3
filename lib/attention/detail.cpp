#include "attention/detail.hpp"

#include <algorithm>
#include <stdexcept>

namespace heads::attention_detail {

void Groups::build(const AttentionArgs& a) {
    const std::size_t n_kv_heads = a.kv.size();
    offsets.assign(n_kv_heads + 1, 0);
    for (auto g : a.kv_head_of) {
        if (g < 0 || std::size_t(g) >= n_kv_heads)
            throw std::invalid_argument("attention: query head mapped to a missing KV head");
        ++offsets[std::size_t(g) + 1];
    }
    for (std::size_t g = 0; g < n_kv_heads; ++g) offsets[g + 1] += offsets[g];
    heads.resize(a.kv_head_of.size());
    fill.assign(offsets.begin(), offsets.end() - 1);
    for (std::size_t h = 0; h < a.kv_head_of.size(); ++h) heads[std::size_t(fill[std::size_t(a.kv_head_of[h])]++)] = std::int32_t(h);
}

std::int64_t Groups::largest() const {
    std::int64_t most = 0;
    for (std::size_t g = 0; g + 1 < offsets.size(); ++g) most = std::max(most, size(g));
    return most;
}

ProbeSink::ProbeSink(const AttentionArgs& args) : a_(args) {
    const AttentionProbe& p = args.probe;
    if (!p.stats) return;
    for (auto position : args.positions)
        if (position < 0 || position >= std::int64_t(p.tokens.size()))
            throw std::invalid_argument("attention: head statistics need the token at every query position");
    span_ = repeat_span(p.tokens);
}

void ProbeSink::consume(std::int64_t h, std::int64_t g, std::int64_t i, const float* row) const {
    const AttentionProbe& p = a_.probe;
    const KvHeadView& kv = a_.kv[std::size_t(g)];
    if (p.probs) std::copy(row, row + kv.slots, p.probs + (h * a_.n_new + i) * p.key_stride);
    // The mass each slot of KV head g received, summed over queries and the query heads g serves.
    const auto add_row = [&](float* received) {
        float* target = received + g * p.slot_stride;
        for (std::int64_t s = 0; s < kv.slots; ++s) target[s] += row[s];
    };
    if (p.received) add_row(p.received);
    if (p.received_recent && i >= a_.n_new - p.recent_queries) add_row(p.received_recent);
    if (!p.stats) return;
    const std::int64_t t = a_.positions[std::size_t(i)];
    const bool repeat = span_ > 0 && t > span_ && t <= 2 * span_;
    double entropy = 0, sink = 0, prev = 0, echo = 0, induction = 0;
    for (std::int64_t s = 0; s < kv.slots; ++s) {
        const double prob = row[s];
        if (prob <= 0) continue;
        entropy -= prob * std::log(prob);
        const std::int64_t at = kv.pos[s];
        if (at == 0) sink += prob;
        if (at == t - 1) prev += prob;
        if (repeat && at == t - span_) echo += prob;
        if (repeat && at == t - span_ + 1) induction += prob;
    }
    HeadStatSums& sums = p.stats[h];
    sums.entropy += entropy;
    sums.sink += sink;
    ++sums.queries;
    if (t >= 1) {
        sums.prev_token += prev;
        ++sums.prev_queries;
    }
    if (repeat) {
        sums.echo += echo;
        sums.induction += induction;
        ++sums.repeat_queries;
    }
}

}  // namespace heads::attention_detail

namespace heads {

std::int64_t repeat_span(std::span<const std::int32_t> tokens) {
    const std::int64_t n = std::int64_t(tokens.size());
    if (n < 3 || n % 2 == 0) return 0;
    const std::int64_t span = (n - 1) / 2;
    return std::equal(tokens.begin() + 1, tokens.begin() + 1 + span, tokens.begin() + 1 + span) ? span : 0;
}

}  // namespace heads
