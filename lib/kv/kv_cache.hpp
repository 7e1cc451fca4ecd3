#pragma once
// The KV cache: per layer and per KV head, slots of (key, value, position).
// Heads may hold different numbers of slots (a compressed cache is ragged).
// Keys are stored after RoPE, at the position the token had when it was
// computed; position -1 marks an unused slot, other negative positions
// synthetic slots (e.g. a compensation token), which attention always sees.
// Storage grows when needed and never shrinks, so a decoding loop that has
// reserved its length allocates nothing per token.

#include <cstdint>
#include <span>
#include <vector>

#include "attention/attention.hpp"
#include "ops/buffer.hpp"

namespace heads {

struct KvHead {
    Buffer<float> k;            // [capacity, head_dim]
    Buffer<float> v;            // [capacity, head_dim]
    Buffer<std::int32_t> pos;   // [capacity]
    Buffer<float> received;     // [capacity] attention mass each slot received, when the cache tracks it
    std::int64_t slots = 0;     // in use
    std::int64_t capacity = 0;
};

class KvCache {
public:
    KvCache() = default;
    // kv_head_counts[l]: how many KV heads layer l has (0 for a layer without attention).
    KvCache(std::vector<std::int64_t> kv_head_counts, std::int64_t head_dim, std::int64_t capacity = 0);
    KvCache(KvCache&&) = default;
    KvCache& operator=(KvCache&&) = default;

    std::int64_t n_layers() const { return std::int64_t(kv_head_counts_.size()); }
    std::int64_t n_kv_heads(std::int64_t layer) const { return kv_head_counts_[std::size_t(layer)]; }
    const std::vector<std::int64_t>& kv_head_counts() const { return kv_head_counts_; }
    std::int64_t head_dim() const { return head_dim_; }

    KvHead& head(std::int64_t layer, std::int64_t g) { return heads_[index(layer, g)]; }
    const KvHead& head(std::int64_t layer, std::int64_t g) const { return heads_[index(layer, g)]; }
    KvHeadView view(std::int64_t layer, std::int64_t g) const;
    // Most slots of any head of the layer (the slot axis of a KV frame).
    std::int64_t max_slots(std::int64_t layer) const;
    std::int64_t total_slots() const;
    // The largest position held (-1 when empty).
    std::int32_t max_position() const;

    // Whether attention adds the mass each slot receives to KvHead::received
    // at every step (for policies that rank slots by it, such as H2O), from
    // every query of a step, or with recent_queries > 0 from its last
    // recent_queries queries only (SnapKV's observation window).
    // Turning it on starts every count at 0.
    void track_received(bool on, std::int64_t recent_queries = 0);
    bool tracks_received() const { return track_received_; }
    std::int64_t received_window() const { return received_window_; }

    // Room for `more` new slots in every head, growing storage if needed.
    void reserve_more(std::int64_t more);
    // Room for `slots` slots in one head.
    void reserve(std::int64_t layer, std::int64_t g, std::int64_t slots);

    // Appends positions.size() slots to one head: slot i gets the key at
    // k + i·row_stride, the value at v + i·row_stride (head_dim floats each)
    // and positions[i], with no received mass yet. Grows storage if needed.
    void append(std::int64_t layer, std::int64_t g, const float* k, const float* v, std::int64_t row_stride,
                std::span<const std::int32_t> positions);
    // Drops every slot at position >= n (synthetic slots stay): rollback of
    // rejected draft tokens, in any head, whatever a policy kept.
    void truncate(std::int64_t n);
    // Keeps exactly these slots of one head, in this order (ascending for
    // eviction; any order is allowed).
    void keep(std::int64_t layer, std::int64_t g, std::span<const std::int64_t> slots);
    // Drops everything.
    void clear();
    // Becomes a copy of `other` (same layout); allocates only to grow.
    void copy_from(const KvCache& other);

private:
    // Copies `count` slots (key, value, position and, when tracked, received
    // mass) of `from` from from_slot on into `to` at to_slot: every move of
    // slots goes through here. Within one head, to_slot <= from_slot.
    void move_slots(KvHead& to, std::int64_t to_slot, const KvHead& from, std::int64_t from_slot,
                    std::int64_t count) const;
    std::size_t index(std::int64_t layer, std::int64_t g) const {
        return std::size_t(offsets_[std::size_t(layer)] + g);
    }

    std::vector<std::int64_t> kv_head_counts_;
    std::vector<std::int64_t> offsets_;
    std::int64_t head_dim_ = 0;
    bool track_received_ = false;
    std::int64_t received_window_ = 0;
    std::vector<KvHead> heads_;
};

}  // namespace heads
