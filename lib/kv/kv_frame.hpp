#pragma once
// The KV cache as a safetensors frame (man/heads.7). Ragged: the heads of a
// layer are stored one after the other, each with exactly the slots it
// holds, so a compressed cache takes only the room its kept slots need.
// Per layer L:
//   kv.L.slots  [n_kv_heads_l]          I32: slots of each KV head, in head order
//   kv.L.k      [slots_l, head_dim]     F32: keys after RoPE; head g's rows follow head g-1's
//   kv.L.v      [slots_l, head_dim]     F32
// or, for a cache stored in another slot type (attention/slot_type.hpp),
// BF16 [slots_l, head_dim], I8 [slots_l, head_dim] (q8) or U8
// [slots_l, head_dim / 2] (q4, two numbers a byte), the last two with
//   kv.L.k_scale, kv.L.v_scale  [slots_l]  F32: each row's scale
//   kv.L.pos    [slots_l]               I32: position of each slot (< -1: synthetic)
// where slots_l is the sum of kv.L.slots, and optionally:
//   kv.L.budget           [n_kv_heads_l] I32: each head's slot budget under the policy (-1: unbounded)
//   kv.L.score            [slots_l] F32: the score a ranking policy keeps each slot by
//   kv.L.received         [slots_l] F32: attention mass each slot received from every query of
//                          the sequence, summed over the query heads that read that KV head
//   kv.L.received_recent  the same from the last heads.recent_queries queries only
// Metadata: heads.kind=kv, heads.model, heads.tokens, heads.policy,
// heads.recent_queries (with the received tensors).
// Frames written before the ragged layout ([n_kv_heads_l, slots, head_dim],
// shorter heads padded with position -1) are still read.

#include <cstdint>
#include <string>
#include <vector>

#include "kv/kv_cache.hpp"
#include "safetensors/frame.hpp"

namespace heads {

// Per layer, one value per slot of each head, heads one after the other (the ragged layout).
using KvSlotValues = std::vector<std::vector<float>>;  // [n_layers][slots_l]
// Per layer, one slot budget per KV head; -1 for a head the policy keeps whole.
using KvBudgets = std::vector<std::vector<std::int32_t>>;  // [n_layers][n_kv_heads_l]

struct KvFrameInfo {
    std::string model;                 // fingerprint
    std::vector<std::int32_t> tokens;  // the sequence the cache holds
    std::string policy = "full";       // compression policy applied
    KvBudgets budgets = {};            // the policy's per-head budgets; empty when it has none
};

struct KvReceived {
    std::vector<std::vector<float>> all;     // [n_layers][n_kv_heads_l, slots_l] (padded to the layer's longest head)
    std::vector<std::vector<float>> recent;  // [n_layers][n_kv_heads_l, slots_l]
    std::vector<std::int64_t> slots;         // [n_layers] slot axis of each layer's arrays
    std::int64_t recent_queries = 32;
};

// The frame of a cache. A cache that tracks received mass (a ranking policy's
// score, KvHead::received) writes it as kv.L.score.
Frame kv_to_frame(const KvCache& cache, const KvFrameInfo& info, const KvReceived* received = nullptr);

struct KvFrameContents {
    KvCache cache;
    KvFrameInfo info;
    Metadata metadata;                // all of it, for what other tools add
    KvSlotValues received;            // when the frame has them, else empty
    KvSlotValues received_recent;
    KvSlotValues score;
    std::int64_t recent_queries = 0;  // heads.recent_queries, 0 when absent
};

// The policy a KV frame says made it (heads.policy; "full" when it says
// none), checked: throws heads::Error "WHERE: heads.policy: ..." for one
// make_kv_policy() refuses, so that the frame is named, not only the spec.
std::string kv_frame_policy(const Frame& frame, const std::string& where);

// Checks the frame's kind, tensors, shapes and dtypes; throws heads::Error
// "WHERE: what is wrong".
KvFrameContents kv_from_frame(const Frame& frame, const std::string& where);

// Bytes the frame's tensor data takes (the file is this plus the 8-byte size and the JSON header).
std::int64_t frame_data_bytes(const Frame& frame);

}  // namespace heads
