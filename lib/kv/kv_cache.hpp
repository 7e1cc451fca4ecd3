#pragma once
// The KV cache: per layer and per KV head, slots of (key, value, position).
// Heads may hold different numbers of slots (a compressed cache is ragged).
// Keys are stored after RoPE, at the position the token had when it was
// computed; position -1 marks an unused slot, other negative positions
// synthetic slots (e.g. a compensation token), which attention always sees.
// Storage grows when needed and never shrinks, so a decoding loop that has
// reserved its length allocates nothing per token.
// Keys and values are stored in the cache's slot type (attention/slot_type.hpp):
// f32, or bf16, q8 or q4 (a quantizing policy's), quantized as slots arrive
// and kept so in memory; attention reads them as they are.

#include <cstdint>
#include <span>
#include <vector>

#include "attention/attention.hpp"
#include "ops/buffer.hpp"

namespace heads {

struct KvHead {
    Buffer<std::uint8_t> k;     // [capacity, row_bytes]: keys in the cache's slot type
    Buffer<std::uint8_t> v;     // [capacity, row_bytes]
    Buffer<float> k_scale;      // [capacity] each key row's scale (q8, q4)
    Buffer<float> v_scale;      // [capacity]
    Buffer<std::int32_t> pos;   // [capacity]
    Buffer<float> received;     // [capacity] attention mass each slot received, when the cache tracks it
    std::int64_t slots = 0;     // in use
    std::int64_t capacity = 0;

    // The rows as floats, in an f32 cache.
    float* k_f32() { return reinterpret_cast<float*>(k.data()); }
    float* v_f32() { return reinterpret_cast<float*>(v.data()); }
    const float* k_f32() const { return reinterpret_cast<const float*>(k.data()); }
    const float* v_f32() const { return reinterpret_cast<const float*>(v.data()); }
};

class KvCache {
public:
    KvCache() = default;
    // kv_head_counts[l]: how many KV heads layer l has (0 for a layer without attention);
    // slots are stored in `type` until set_slot_type says otherwise.
    KvCache(std::vector<std::int64_t> kv_head_counts, std::int64_t head_dim, std::int64_t capacity = 0,
            SlotType type = SlotType::f32);
    KvCache(KvCache&&) = default;
    KvCache& operator=(KvCache&&) = default;

    std::int64_t n_layers() const { return std::int64_t(kv_head_counts_.size()); }
    std::int64_t n_kv_heads(std::int64_t layer) const { return kv_head_counts_[std::size_t(layer)]; }
    const std::vector<std::int64_t>& kv_head_counts() const { return kv_head_counts_; }
    std::int64_t head_dim() const { return head_dim_; }
    SlotType slot_type() const { return slot_type_; }
    // The type the cache was made with (the session's KV type): a new
    // sequence's prompt is stored in it, whatever a policy quantizes to later.
    SlotType start_type() const { return start_type_; }
    // Bytes of one key (or value) row in the slot type.
    std::int64_t row_bytes() const { return slot_row_bytes(slot_type_, head_dim_); }
    // Stores every slot, and every slot to come, in `type` (quantizing what
    // is held; nothing changes when the type is already `type`).
    void set_slot_type(SlotType type);
    // Bytes the slots in use take (keys, values, scales, positions).
    std::int64_t slot_data_bytes() const;

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
    // The same with rows already stored in the cache's slot type (row_bytes()
    // apart), with their scales (null when the type has none).
    void append_stored(std::int64_t layer, std::int64_t g, const std::uint8_t* k, const std::uint8_t* v,
                       const float* k_scale, const float* v_scale, std::span<const std::int32_t> positions);
    // Slot s's key or value read back into head_dim floats, and written (quantized to the slot type).
    void read_key(std::int64_t layer, std::int64_t g, std::int64_t s, float* out) const;
    void read_value(std::int64_t layer, std::int64_t g, std::int64_t s, float* out) const;
    void write_key(std::int64_t layer, std::int64_t g, std::int64_t s, const float* key);
    void write_value(std::int64_t layer, std::int64_t g, std::int64_t s, const float* value);
    // Drops every slot at position >= n (synthetic slots stay): rollback of
    // rejected draft tokens, in any head, whatever a policy kept.
    void truncate(std::int64_t n);
    // Keeps exactly these slots of one head, in this order (ascending for
    // eviction; any order is allowed).
    void keep(std::int64_t layer, std::int64_t g, std::span<const std::int64_t> slots);
    // Drops everything.
    void clear();
    // Becomes a copy of `other` (same layout, its slot type too; the start
    // type stays this cache's); allocates only to grow.
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
    SlotType slot_type_ = SlotType::f32;
    SlotType start_type_ = SlotType::f32;
    bool track_received_ = false;
    std::int64_t received_window_ = 0;
    std::vector<KvHead> heads_;
};

}  // namespace heads
