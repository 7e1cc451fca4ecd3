#include "kv/kv_cache.hpp"

#include <algorithm>
#include <cstring>
#include <stdexcept>

#include "tensor/error.hpp"

namespace heads {

KvCache::KvCache(std::vector<std::int64_t> kv_head_counts, std::int64_t head_dim, std::int64_t capacity, SlotType type)
    : kv_head_counts_(std::move(kv_head_counts)), head_dim_(head_dim), slot_type_(type), start_type_(type) {
    std::int64_t total = 0;
    for (auto n : kv_head_counts_) {
        offsets_.push_back(total);
        total += n;
    }
    heads_.resize(std::size_t(total));
    if (capacity > 0)
        for (std::int64_t l = 0; l < n_layers(); ++l)
            for (std::int64_t g = 0; g < n_kv_heads(l); ++g) reserve(l, g, capacity);
}

KvHeadView KvCache::view(std::int64_t layer, std::int64_t g) const {
    const KvHead& h = head(layer, g);
    const bool scaled = slot_type_scaled(slot_type_);
    return {h.k.data(), h.v.data(), h.pos.data(), h.slots, slot_type_, scaled ? h.k_scale.data() : nullptr,
            scaled ? h.v_scale.data() : nullptr};
}

std::int64_t KvCache::max_slots(std::int64_t layer) const {
    std::int64_t most = 0;
    for (std::int64_t g = 0; g < n_kv_heads(layer); ++g) most = std::max(most, head(layer, g).slots);
    return most;
}

std::int64_t KvCache::total_slots() const {
    std::int64_t total = 0;
    for (const auto& h : heads_) total += h.slots;
    return total;
}

std::int32_t KvCache::max_position() const {
    std::int32_t most = -1;
    for (const auto& h : heads_)
        for (std::int64_t s = 0; s < h.slots; ++s) most = std::max(most, h.pos.data()[s]);
    return most;
}

void KvCache::reserve(std::int64_t layer, std::int64_t g, std::int64_t slots) {
    KvHead& h = head(layer, g);
    if (slots <= h.capacity) return;
    const std::int64_t capacity = std::max(slots, h.capacity + h.capacity / 2);
    const std::int64_t row = row_bytes();
    h.k.grow_keep(std::size_t(capacity * row), std::size_t(h.slots * row));
    h.v.grow_keep(std::size_t(capacity * row), std::size_t(h.slots * row));
    if (slot_type_scaled(slot_type_)) {
        h.k_scale.grow_keep(std::size_t(capacity), std::size_t(h.slots));
        h.v_scale.grow_keep(std::size_t(capacity), std::size_t(h.slots));
    }
    h.pos.grow_keep(std::size_t(capacity), std::size_t(h.slots));
    if (track_received_) h.received.grow_keep(std::size_t(capacity), std::size_t(h.slots));
    h.capacity = capacity;
}

void KvCache::track_received(bool on, std::int64_t recent_queries) {
    track_received_ = on;
    received_window_ = on ? recent_queries : 0;
    if (!on) return;
    for (auto& h : heads_) {
        h.received.reserve(std::size_t(h.capacity));
        std::fill(h.received.data(), h.received.data() + h.slots, 0.0f);
    }
}

void KvCache::reserve_more(std::int64_t more) {
    for (std::int64_t l = 0; l < n_layers(); ++l)
        for (std::int64_t g = 0; g < n_kv_heads(l); ++g) reserve(l, g, head(l, g).slots + more);
}

void KvCache::keep(std::int64_t layer, std::int64_t g, std::span<const std::int64_t> slots) {
    KvHead& h = head(layer, g);
    for (auto s : slots)
        if (s < 0 || s >= h.slots) throw std::out_of_range("KvCache::keep: slot out of range");
    // In place when the kept slots ascend (the usual case); else through a copy.
    const bool ascending = std::is_sorted(slots.begin(), slots.end()) &&
                           std::adjacent_find(slots.begin(), slots.end()) == slots.end();
    const auto kept = std::int64_t(slots.size());
    if (!ascending) {
        KvCache one({1}, head_dim_);
        one.slot_type_ = slot_type_;
        one.reserve(0, 0, kept);
        one.track_received(track_received_);
        KvHead& copy = one.head(0, 0);
        for (std::int64_t i = 0; i < kept; ++i) move_slots(copy, i, h, slots[std::size_t(i)], 1);
        move_slots(h, 0, copy, 0, kept);
        h.slots = kept;
        return;
    }
    std::int64_t to = 0;
    for (auto from : slots) {
        if (from != to) move_slots(h, to, h, from, 1);
        ++to;
    }
    h.slots = to;
}

void KvCache::truncate(std::int64_t n) {
    for (auto& h : heads_) {
        std::int64_t to = 0;
        for (std::int64_t s = 0; s < h.slots; ++s) {
            const std::int32_t position = h.pos.data()[s];
            if (position >= n) continue;  // negative positions (unused, synthetic) stay
            if (s != to) move_slots(h, to, h, s, 1);
            ++to;
        }
        h.slots = to;
    }
}

void KvCache::append(std::int64_t layer, std::int64_t g, const float* k, const float* v, std::int64_t row_stride,
                     std::span<const std::int32_t> positions) {
    const auto n = std::int64_t(positions.size());
    reserve(layer, g, head(layer, g).slots + n);
    KvHead& h = head(layer, g);
    for (std::int64_t i = 0; i < n; ++i) {
        write_key(layer, g, h.slots + i, k + i * row_stride);
        write_value(layer, g, h.slots + i, v + i * row_stride);
    }
    std::copy(positions.begin(), positions.end(), h.pos.data() + h.slots);
    if (track_received_) std::fill(h.received.data() + h.slots, h.received.data() + h.slots + n, 0.0f);
    h.slots += n;
}

void KvCache::append_stored(std::int64_t layer, std::int64_t g, const std::uint8_t* k, const std::uint8_t* v,
                            const float* k_scale, const float* v_scale, std::span<const std::int32_t> positions) {
    const auto n = std::int64_t(positions.size());
    reserve(layer, g, head(layer, g).slots + n);
    KvHead& h = head(layer, g);
    const std::size_t bytes = std::size_t(n * row_bytes());
    std::memcpy(h.k.data() + h.slots * row_bytes(), k, bytes);
    std::memcpy(h.v.data() + h.slots * row_bytes(), v, bytes);
    if (slot_type_scaled(slot_type_)) {
        if (!k_scale || !v_scale) throw std::invalid_argument("KvCache::append_stored: the slot type needs scales");
        std::copy(k_scale, k_scale + n, h.k_scale.data() + h.slots);
        std::copy(v_scale, v_scale + n, h.v_scale.data() + h.slots);
    }
    std::copy(positions.begin(), positions.end(), h.pos.data() + h.slots);
    if (track_received_) std::fill(h.received.data() + h.slots, h.received.data() + h.slots + n, 0.0f);
    h.slots += n;
}

void KvCache::read_key(std::int64_t layer, std::int64_t g, std::int64_t s, float* out) const {
    const KvHead& h = head(layer, g);
    dequantize_row(slot_type_, h.k.data() + s * row_bytes(), slot_type_scaled(slot_type_) ? h.k_scale.data()[s] : 1.0f,
                   head_dim_, out);
}

void KvCache::read_value(std::int64_t layer, std::int64_t g, std::int64_t s, float* out) const {
    const KvHead& h = head(layer, g);
    dequantize_row(slot_type_, h.v.data() + s * row_bytes(), slot_type_scaled(slot_type_) ? h.v_scale.data()[s] : 1.0f,
                   head_dim_, out);
}

void KvCache::write_key(std::int64_t layer, std::int64_t g, std::int64_t s, const float* key) {
    KvHead& h = head(layer, g);
    float scale = 1.0f;
    quantize_row(slot_type_, key, head_dim_, h.k.data() + s * row_bytes(), scale);
    if (slot_type_scaled(slot_type_)) h.k_scale.data()[s] = scale;
}

void KvCache::write_value(std::int64_t layer, std::int64_t g, std::int64_t s, const float* value) {
    KvHead& h = head(layer, g);
    float scale = 1.0f;
    quantize_row(slot_type_, value, head_dim_, h.v.data() + s * row_bytes(), scale);
    if (slot_type_scaled(slot_type_)) h.v_scale.data()[s] = scale;
}

void KvCache::set_slot_type(SlotType type) {
    if (type == slot_type_) return;
    // Through f32, head by head: the new rows are written over a fresh store.
    KvCache converted(kv_head_counts_, head_dim_, 0, type);
    converted.start_type_ = start_type_;
    converted.track_received(track_received_, received_window_);
    std::vector<float> k(static_cast<std::size_t>(head_dim_)), v(static_cast<std::size_t>(head_dim_));
    for (std::int64_t l = 0; l < n_layers(); ++l)
        for (std::int64_t g = 0; g < n_kv_heads(l); ++g) {
            const KvHead& from = head(l, g);
            converted.reserve(l, g, from.slots);
            KvHead& to = converted.head(l, g);
            for (std::int64_t s = 0; s < from.slots; ++s) {
                read_key(l, g, s, k.data());
                read_value(l, g, s, v.data());
                converted.write_key(l, g, s, k.data());
                converted.write_value(l, g, s, v.data());
            }
            std::copy(from.pos.data(), from.pos.data() + from.slots, to.pos.data());
            if (track_received_) std::copy(from.received.data(), from.received.data() + from.slots, to.received.data());
            to.slots = from.slots;
        }
    *this = std::move(converted);
}

std::int64_t KvCache::slot_data_bytes() const { return total_slots() * slot_bytes(slot_type_, head_dim_); }

void KvCache::move_slots(KvHead& to, std::int64_t to_slot, const KvHead& from, std::int64_t from_slot,
                         std::int64_t count) const {
    if (count <= 0) return;
    const std::size_t n = std::size_t(count), row = std::size_t(row_bytes());
    // memmove: within one head the ranges may overlap.
    std::memmove(to.k.data() + std::size_t(to_slot) * row, from.k.data() + std::size_t(from_slot) * row, n * row);
    std::memmove(to.v.data() + std::size_t(to_slot) * row, from.v.data() + std::size_t(from_slot) * row, n * row);
    if (slot_type_scaled(slot_type_)) {
        std::memmove(to.k_scale.data() + to_slot, from.k_scale.data() + from_slot, sizeof(float) * n);
        std::memmove(to.v_scale.data() + to_slot, from.v_scale.data() + from_slot, sizeof(float) * n);
    }
    std::memmove(to.pos.data() + to_slot, from.pos.data() + from_slot, sizeof(std::int32_t) * n);
    if (track_received_)
        std::memmove(to.received.data() + to_slot, from.received.data() + from_slot, sizeof(float) * n);
}

void KvCache::clear() {
    for (auto& h : heads_) h.slots = 0;
}

void KvCache::copy_from(const KvCache& other) {
    if (other.kv_head_counts_ != kv_head_counts_ || other.head_dim_ != head_dim_)
        throw std::invalid_argument("KvCache::copy_from: caches of different layouts");
    if (other.slot_type_ != slot_type_) {
        // Storage is laid out for one slot type: start over in the other's
        // (the type a new sequence starts in stays this cache's).
        const SlotType start = start_type_;
        *this = KvCache(kv_head_counts_, head_dim_, 0, other.slot_type_);
        start_type_ = start;
    }
    if (other.track_received_ != track_received_ || other.received_window_ != received_window_)
        track_received(other.track_received_, other.received_window_);
    for (std::int64_t l = 0; l < n_layers(); ++l)
        for (std::int64_t g = 0; g < n_kv_heads(l); ++g) {
            const KvHead& from = other.head(l, g);
            reserve(l, g, from.slots);
            KvHead& to = head(l, g);
            move_slots(to, 0, from, 0, from.slots);
            to.slots = from.slots;
        }
}

}  // namespace heads
