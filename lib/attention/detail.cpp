#include "attention/detail.hpp"

#include <algorithm>
#include <stdexcept>

namespace heads::attention_detail {

void Groups::build(const AttentionArgs& a) {
    const std::size_t n_kv = a.kv.size();
    offsets.assign(n_kv + 1, 0);
    for (auto g : a.kv_head_of) {
        if (g < 0 || std::size_t(g) >= n_kv) throw std::invalid_argument("attention: query head mapped to a missing KV head");
        ++offsets[std::size_t(g) + 1];
    }
    for (std::size_t g = 0; g < n_kv; ++g) offsets[g + 1] += offsets[g];
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
    has_echo_.assign(std::size_t(args.n_new), 0);
    has_induction_.assign(std::size_t(args.n_new), 0);
    const auto& tokens = p.tokens;
    for (std::int64_t i = 0; i < args.n_new; ++i) {
        const std::int64_t position = args.positions[std::size_t(i)];
        if (position < 0 || position >= std::int64_t(tokens.size()))
            throw std::invalid_argument("attention: head statistics need the token at every query position");
        const std::int32_t token = tokens[std::size_t(position)];
        for (std::int64_t j = 0; j < position; ++j)
            if (tokens[std::size_t(j)] == token) {
                has_echo_[std::size_t(i)] = 1;
                if (j + 1 < position) {
                    has_induction_[std::size_t(i)] = 1;
                    break;
                }
            }
    }
}

void ProbeSink::consume(std::int64_t h, std::int64_t g, std::int64_t i, const float* row) const {
    const AttentionProbe& p = a_.probe;
    const KvHeadView& kv = a_.kv[std::size_t(g)];
    if (p.probs) std::copy(row, row + kv.slots, p.probs + (h * a_.n_new + i) * p.key_stride);
    if (p.received) {
        float* target = p.received + g * p.slot_stride;
        for (std::int64_t s = 0; s < kv.slots; ++s) target[s] += row[s];
    }
    if (p.received_recent && i >= a_.n_new - p.recent_queries) {
        float* target = p.received_recent + g * p.slot_stride;
        for (std::int64_t s = 0; s < kv.slots; ++s) target[s] += row[s];
    }
    if (!p.stats) return;
    const std::int64_t position = a_.positions[std::size_t(i)];
    if (position < 1) return;
    const std::int32_t token = p.tokens[std::size_t(position)];
    const std::int64_t n_tokens = std::int64_t(p.tokens.size());
    double entropy = 0, sink = 0, prev = 0, echo = 0, induction = 0;
    for (std::int64_t s = 0; s < kv.slots; ++s) {
        const double prob = row[s];
        if (prob <= 0) continue;
        entropy -= prob * std::log(prob);
        const std::int64_t at = kv.pos[s];
        if (at == 0) sink += prob;
        if (at == position - 1) prev += prob;
        if (at >= 0 && at < position && at < n_tokens) {
            if (p.tokens[std::size_t(at)] == token) echo += prob;
            if (at >= 1 && p.tokens[std::size_t(at - 1)] == token) induction += prob;
        }
    }
    HeadStatSums& sums = p.stats[h];
    sums.entropy += entropy;
    sums.sink += sink;
    sums.prev_token += prev;
    ++sums.queries;
    if (has_echo_[std::size_t(i)]) {
        sums.echo += echo;
        ++sums.echo_queries;
    }
    if (has_induction_[std::size_t(i)]) {
        sums.induction += induction;
        ++sums.induction_queries;
    }
}

}  // namespace heads::attention_detail
