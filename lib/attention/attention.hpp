#pragma once
// Attention of new query tokens over per-head KV caches.
//
// Each KV head has its own slots (their number may differ between heads: a
// compressed cache is ragged). The new tokens' keys and values have already
// been appended: they are the last n_new slots of every head. Visibility:
//   - a slot from before this step is seen by every new query, except that a
//     sliding window hides slots at a position <= query position - window
//     (unused slots, position -1, are never seen; other negative positions
//     mark synthetic slots, always seen; a synthetic slot at position
//     -(n + 1) stands for n dropped slots and its logit gets + log n, a
//     compensation token);
//   - new token j is seen by new query i when mask[i, j] (causal j <= i when
//     there is no mask: a tree or Jacobi mask makes speculative verification
//     one forward pass).
// Query head h reads KV head kv_head_of[h], so MHA, GQA, MQA and pruned
// layouts are one case, and no KV head is copied per query head.
//
// attention() is the fast path (oneDNN block matmuls with an online softmax
// for many queries over f32 slots; a row at a time for a few, and for slots
// stored in another type (slot_type.hpp), which it reads as they are);
// attention_reference() is the plain oracle with the same signature, kept
// for tests.

#include <cstdint>
#include <span>
#include <vector>

#include "attention/slot_type.hpp"
#include "ops/buffer.hpp"
#include "ops/context.hpp"

namespace heads {

struct KvHeadView {
    const void* k;             // [slots, slot_row_bytes(type, head_dim)], RoPE applied
    const void* v;             // [slots, slot_row_bytes(type, head_dim)]
    const std::int32_t* pos;   // [slots]
    std::int64_t slots;        // in use; the last n_new are this step's tokens
    SlotType type = SlotType::f32;
    const float* k_scale = nullptr;  // [slots] for q8 and q4: each key row's scale
    const float* v_scale = nullptr;  // [slots] the same for values

    const float* k_f32() const { return static_cast<const float*>(k); }
    const float* v_f32() const { return static_cast<const float*>(v); }
    const std::uint8_t* k_row(std::int64_t s, std::int64_t head_dim) const {
        return static_cast<const std::uint8_t*>(k) + s * slot_row_bytes(type, head_dim);
    }
    const std::uint8_t* v_row(std::int64_t s, std::int64_t head_dim) const {
        return static_cast<const std::uint8_t*>(v) + s * slot_row_bytes(type, head_dim);
    }
    float k_scale_of(std::int64_t s) const { return k_scale ? k_scale[s] : 1.0f; }
    float v_scale_of(std::int64_t s) const { return v_scale ? v_scale[s] : 1.0f; }
};

// Per-head sums of the attention statistics of the head table, over queries
// (definitions shared with scripts/reference.py and man/heads.7). A query at
// position t of a sequence whose tokens (by position) the probe holds:
//   entropy     -sum p ln p over the slots it sees (nats)        every query
//   sink        mass on the slot at position 0                    every query
//   prev_token  mass on the slot at position t - 1                t >= 1
//   induction   mass on position t - L + 1, and                   second-copy queries
//   echo        mass on position t - L                            of a repeat sequence
// A repeat sequence has length 2L+1 with tokens[1..L] == tokens[L+1..2L]
// (BOS, then a span twice); its second-copy queries are t = L+1 .. 2L.
struct HeadStatSums {
    double entropy = 0, sink = 0, prev_token = 0, induction = 0, echo = 0;
    std::int64_t queries = 0, prev_queries = 0, repeat_queries = 0;
};

// L when `tokens` is a repeat sequence (above), else 0.
std::int64_t repeat_span(std::span<const std::int32_t> tokens);

// What the caller wants besides the output; every member optional.
struct AttentionProbe {
    float* probs = nullptr;               // [n_heads, n_new, key_stride]: probabilities by slot, 0 where unseen
    std::int64_t key_stride = 0;
    float* received = nullptr;            // [n_kv_heads, slot_stride] += probability summed over queries and the query heads of the KV head
    float* received_recent = nullptr;     // the same over the last `recent_queries` queries only
    std::int64_t slot_stride = 0;
    std::int64_t recent_queries = 32;
    HeadStatSums* stats = nullptr;        // [n_heads], added to
    std::span<const std::int32_t> tokens; // token at each position, for echo and induction
    bool wanted() const { return probs || received || received_recent || stats; }
};

struct AttentionArgs {
    float* out = nullptr;                      // head h of query i at out + i*out_stride + h*head_dim
    std::int64_t out_stride = 0;
    const float* q = nullptr;                  // the same addressing; RoPE applied
    std::int64_t q_stride = 0;
    std::int64_t n_new = 0;
    std::int64_t head_dim = 0;
    std::span<const std::int32_t> kv_head_of;  // [n_heads]
    std::span<const KvHeadView> kv;            // [n_kv_heads]
    std::span<const std::int32_t> positions;   // [n_new] query positions
    const std::uint8_t* mask = nullptr;        // [n_new, n_new] or null (causal)
    std::int64_t sliding_window = 0;           // 0: none
    std::span<const std::uint8_t> head_off;    // [n_heads] or empty: 1 zeroes that head's output
    float scale = 0;                           // 0: 1/sqrt(head_dim)
    AttentionProbe probe{};
};


namespace attention_detail {
// The query heads of each KV head, flattened: heads of g at [offsets[g], offsets[g+1]).
struct Groups {
    std::vector<std::int32_t> offsets, heads, fill;
    void build(const AttentionArgs& a);
    std::int64_t size(std::size_t g) const { return offsets[g + 1] - offsets[g]; }
    std::int64_t largest() const;
};
}  // namespace attention_detail

// Scratch that attention() reuses between calls (grow-only).
struct AttentionWorkspace {
    Buffer<float> memory;
    attention_detail::Groups groups;
};

void attention(Context& ctx, AttentionWorkspace& workspace, const AttentionArgs& args);
void attention_reference(Context& ctx, AttentionWorkspace& workspace, const AttentionArgs& args);

}  // namespace heads
