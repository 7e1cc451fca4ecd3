#include "kv/kv_cache.hpp"

#include <algorithm>
#include <cstring>
#include <stdexcept>

#include "tensor/error.hpp"

namespace heads {

KvCache::KvCache(std::vector<std::int64_t> kv_head_counts, std::int64_t head_dim, std::int64_t capacity)
    : kv_head_counts_(std::move(kv_head_counts)), head_dim_(head_dim) {
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
    return {h.k.data(), h.v.data(), h.pos.data(), h.slots};
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
    h.k.grow_keep(std::size_t(capacity * head_dim_), std::size_t(h.slots * head_dim_));
    h.v.grow_keep(std::size_t(capacity * head_dim_), std::size_t(h.slots * head_dim_));
    h.pos.grow_keep(std::size_t(capacity), std::size_t(h.slots));
    if (track_received_) h.received.grow_keep(std::size_t(capacity), std::size_t(h.slots));
    h.capacity = capacity;
}

void KvCache::track_received(bool on) {
    track_received_ = on;
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
    if (!ascending) {
        std::vector<float> order;
        KvCache one({1}, head_dim_);
        KvHead& copy = one.head(0, 0);
        one.reserve(0, 0, std::int64_t(slots.size()));
        for (std::size_t i = 0; i < slots.size(); ++i) {
            std::memcpy(copy.k.data() + i * head_dim_, h.k.data() + slots[i] * head_dim_, sizeof(float) * head_dim_);
            std::memcpy(copy.v.data() + i * head_dim_, h.v.data() + slots[i] * head_dim_, sizeof(float) * head_dim_);
            copy.pos.data()[i] = h.pos.data()[slots[i]];
            if (track_received_) order.push_back(h.received.data()[slots[i]]);
        }
        if (track_received_) std::copy(order.begin(), order.end(), h.received.data());
        std::memcpy(h.k.data(), copy.k.data(), sizeof(float) * slots.size() * head_dim_);
        std::memcpy(h.v.data(), copy.v.data(), sizeof(float) * slots.size() * head_dim_);
        std::memcpy(h.pos.data(), copy.pos.data(), sizeof(std::int32_t) * slots.size());
        h.slots = std::int64_t(slots.size());
        return;
    }
    std::int64_t to = 0;
    for (auto from : slots) {
        if (from != to) {
            std::memmove(h.k.data() + to * head_dim_, h.k.data() + from * head_dim_, sizeof(float) * head_dim_);
            std::memmove(h.v.data() + to * head_dim_, h.v.data() + from * head_dim_, sizeof(float) * head_dim_);
            h.pos.data()[to] = h.pos.data()[from];
            if (track_received_) h.received.data()[to] = h.received.data()[from];
        }
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
            if (s != to) {
                std::memmove(h.k.data() + to * head_dim_, h.k.data() + s * head_dim_, sizeof(float) * head_dim_);
                std::memmove(h.v.data() + to * head_dim_, h.v.data() + s * head_dim_, sizeof(float) * head_dim_);
                h.pos.data()[to] = position;
                if (track_received_) h.received.data()[to] = h.received.data()[s];
            }
            ++to;
        }
        h.slots = to;
    }
}

void KvCache::clear() {
    for (auto& h : heads_) h.slots = 0;
}

void KvCache::copy_from(const KvCache& other) {
    if (other.kv_head_counts_ != kv_head_counts_ || other.head_dim_ != head_dim_)
        throw std::invalid_argument("KvCache::copy_from: caches of different layouts");
    if (other.track_received_ != track_received_) track_received(other.track_received_);
    for (std::int64_t l = 0; l < n_layers(); ++l)
        for (std::int64_t g = 0; g < n_kv_heads(l); ++g) {
            const KvHead& from = other.head(l, g);
            reserve(l, g, from.slots);
            KvHead& to = head(l, g);
            std::memcpy(to.k.data(), from.k.data(), sizeof(float) * from.slots * head_dim_);
            std::memcpy(to.v.data(), from.v.data(), sizeof(float) * from.slots * head_dim_);
            std::memcpy(to.pos.data(), from.pos.data(), sizeof(std::int32_t) * from.slots);
            if (track_received_) std::memcpy(to.received.data(), from.received.data(), sizeof(float) * from.slots);
            to.slots = from.slots;
        }
}

}  // namespace heads
