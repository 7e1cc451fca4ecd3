#pragma once
// The KV cache as a safetensors frame (man/heads.7): per layer L,
//   kv.L.k, kv.L.v  [n_kv_heads_l, slots, head_dim]  F32 (keys after RoPE)
//   kv.L.pos        [n_kv_heads_l, slots]            I32, -1 for an unused slot
// where `slots` is the most any head of the layer holds (shorter heads are
// padded with unused slots), and optionally, for compression policies:
//   kv.L.received         [n_kv_heads_l, slots] F32: attention mass each slot received
//                          from every query of the sequence, summed over the query heads
//                          that read that KV head
//   kv.L.received_recent  the same from the last heads.recent_queries queries only
// Metadata: heads.kind=kv, heads.model, heads.tokens, heads.policy,
// heads.recent_queries (with the received tensors).

#include <cstdint>
#include <string>
#include <vector>

#include "kv/kv_cache.hpp"
#include "safetensors/frame.hpp"

namespace heads {

struct KvFrameInfo {
    std::string model;                 // fingerprint
    std::vector<std::int32_t> tokens;  // the sequence the cache holds
    std::string policy = "full";       // compression policy applied
};

struct KvReceived {
    std::vector<std::vector<float>> all;     // [n_layers][n_kv_heads_l, slots_l]
    std::vector<std::vector<float>> recent;  // [n_layers][n_kv_heads_l, slots_l]
    std::vector<std::int64_t> slots;         // [n_layers] slot axis of each layer's arrays
    std::int64_t recent_queries = 32;
};

Frame kv_to_frame(const KvCache& cache, const KvFrameInfo& info, const KvReceived* received = nullptr);

struct KvFrameContents {
    KvCache cache;
    KvFrameInfo info;
    Metadata metadata;                // all of it, for what other tools add
    std::vector<Tensor> received;     // [n_layers] when the frame has them, else empty
    std::vector<Tensor> received_recent;
};

// The policy a KV frame says made it (heads.policy; "full" when it says none).
std::string kv_frame_policy(const Frame& frame);

// Checks the frame's kind, tensors, shapes and dtypes; throws heads::Error
// "WHERE: what is wrong".
KvFrameContents kv_from_frame(const Frame& frame, const std::string& where);

}  // namespace heads
