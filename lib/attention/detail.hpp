#pragma once
// Pieces shared by the fast attention and the reference: which slots a query
// sees, and what the probe does with a finished row of probabilities.

#include <cmath>
#include <vector>

#include "attention/attention.hpp"

namespace heads::attention_detail {

inline float scale_of(const AttentionArgs& a) {
    return a.scale != 0 ? a.scale : 1.0f / std::sqrt(float(a.head_dim));
}

// The additive logit bias of a slot: a synthetic slot at position -(n + 1)
// stands for n dropped slots (RazorAttention's compensation token, whose
// logit gets + log n); every other slot has none.
inline float slot_bias(std::int32_t position) {
    return position < -2 ? std::log(float(-std::int64_t(position) - 1)) : 0.0f;
}

// Whether new query i sees slot s of a KV head whose new block starts at `base`.
inline bool visible(const AttentionArgs& a, const KvHeadView& kv, std::int64_t base, std::int64_t s, std::int64_t i) {
    const std::int32_t position = kv.pos[s];
    if (position == -1) return false;
    if (s >= base) {
        const std::int64_t j = s - base;
        if (a.mask ? !a.mask[i * a.n_new + j] : j > i) return false;
    }
    if (a.sliding_window > 0 && position >= 0 && position <= a.positions[std::size_t(i)] - a.sliding_window) return false;
    return true;
}

// Feeds finished probability rows to the probe. Rows of one KV head must all
// be consumed by one thread (received mass is summed per KV head).
class ProbeSink {
public:
    explicit ProbeSink(const AttentionArgs& args);
    // row: probabilities over the slots of KV head g (0 where unseen), for query head h and query i
    void consume(std::int64_t h, std::int64_t g, std::int64_t i, const float* row) const;

private:
    const AttentionArgs& a_;
    std::int64_t span_ = 0;  // repeat span of the sequence, 0 if it is not one
};

}  // namespace heads::attention_detail
