#include "kv/compress.hpp"

#include <algorithm>
#include <limits>

#include <fmt/format.h>

#include "tensor/error.hpp"

namespace heads {
namespace {

std::int64_t layer_bytes(const Frame& frame, std::int64_t l) {
    const std::string prefix = fmt::format("kv.{}.", l);
    std::int64_t bytes = 0;
    for (const auto& [name, tensor] : frame)
        if (name.starts_with(prefix)) bytes += std::int64_t(tensor.nbytes());
    return bytes;
}

// The last token's slot of each head, set aside while the policy acts.
struct LastSlots {
    struct Slot {
        std::int64_t layer, g;
        std::vector<float> k, v;
        std::int32_t pos;
        float received;
    };
    std::vector<Slot> slots;

    LastSlots(KvCache& cache, std::int32_t last) {
        const std::int64_t head_dim = cache.head_dim();
        for (std::int64_t l = 0; l < cache.n_layers(); ++l)
            for (std::int64_t g = 0; g < cache.n_kv_heads(l); ++g) {
                const KvHead& head = cache.head(l, g);
                for (std::int64_t s = 0; s < head.slots; ++s)
                    if (head.pos.data()[s] == last) {
                        Slot slot{l, g, std::vector<float>(std::size_t(head_dim)), std::vector<float>(std::size_t(head_dim)),
                                  last, cache.tracks_received() ? head.received.data()[s] : 0.0f};
                        cache.read_key(l, g, s, slot.k.data());
                        cache.read_value(l, g, s, slot.v.data());
                        slots.push_back(std::move(slot));
                    }
            }
        cache.truncate(last);
    }
    void put_back(KvCache& cache) const {
        for (const Slot& slot : slots) {
            cache.append(slot.layer, slot.g, slot.k.data(), slot.v.data(), cache.head_dim(), {&slot.pos, 1});
            KvHead& head = cache.head(slot.layer, slot.g);
            if (cache.tracks_received()) head.received.data()[head.slots - 1] = slot.received;
        }
    }
};

}  // namespace

KvCompression compress_kv_frame(const Frame& frame, KvFrameContents contents, KvPolicy& policy, const Rope& rope) {
    KvCache& cache = contents.cache;
    KvCompression out;
    const auto n = std::int64_t(contents.info.tokens.size());
    const std::int64_t next = std::max<std::int64_t>(n, cache.max_position() + 1);
    if (policy.name() == "full") {
        out.frame = frame;
    } else {
        policy.adopt(cache, contents);
        const LastSlots last(cache, std::int32_t(next - 1));
        policy.apply(cache, {.next_position = next - 1, .new_tokens = 0, .rope = &rope});
        last.put_back(cache);
        KvFrameInfo info = contents.info;
        info.policy = policy.name();
        info.budgets = policy.budgets() ? *policy.budgets() : KvBudgets{};
        out.frame = kv_to_frame(cache, info);
    }
    for (std::int64_t l = 0; l < cache.n_layers(); ++l) {
        KvLayerReport r{.layer = l, .heads = cache.n_kv_heads(l)};
        std::int64_t total = 0;
        r.min_slots = cache.n_kv_heads(l) ? std::numeric_limits<std::int64_t>::max() : 0;
        for (std::int64_t g = 0; g < cache.n_kv_heads(l); ++g) {
            const std::int64_t slots = cache.head(l, g).slots;
            r.min_slots = std::min(r.min_slots, slots);
            r.max_slots = std::max(r.max_slots, slots);
            total += slots;
        }
        r.mean_slots = r.heads ? double(total) / double(r.heads) : 0.0;
        r.bytes_before = layer_bytes(frame, l);
        r.bytes_after = layer_bytes(out.frame, l);
        out.layers.push_back(r);
    }
    return out;
}

namespace {
KvLayerReport total_of(const std::vector<KvLayerReport>& layers) {
    KvLayerReport t{.layer = -1};
    double slots = 0;
    t.min_slots = std::numeric_limits<std::int64_t>::max();
    for (const auto& r : layers) {
        if (r.heads == 0) continue;
        t.heads += r.heads;
        t.min_slots = std::min(t.min_slots, r.min_slots);
        t.max_slots = std::max(t.max_slots, r.max_slots);
        slots += r.mean_slots * double(r.heads);
    }
    for (const auto& r : layers) t.bytes_before += r.bytes_before, t.bytes_after += r.bytes_after;
    if (t.heads == 0) t.min_slots = 0;
    t.mean_slots = t.heads ? slots / double(t.heads) : 0.0;
    return t;
}

double share(std::int64_t after, std::int64_t before) { return before ? 100.0 * double(after) / double(before) : 100.0; }
}  // namespace

std::string format_kv_report(const std::vector<KvLayerReport>& layers) {
    std::string out;
    const auto line = [&](const std::string& what, const KvLayerReport& r) {
        out += fmt::format("{}: {} heads, slots kept per head min {} mean {:.1f} max {}, bytes {} -> {} ({:.1f}%)\n", what,
                           r.heads, r.min_slots, r.mean_slots, r.max_slots, r.bytes_before, r.bytes_after,
                           share(r.bytes_after, r.bytes_before));
    };
    for (const auto& r : layers) line(fmt::format("layer {}", r.layer), r);
    line("total", total_of(layers));
    return out;
}

std::string kv_report_tsv(const std::vector<KvLayerReport>& layers, std::int64_t frame, bool header) {
    std::string out = header ? "frame\tlayer\theads\tmin_slots\tmean_slots\tmax_slots\tbytes_before\tbytes_after\n" : "";
    const auto row = [&](const std::string& layer, const KvLayerReport& r) {
        out += fmt::format("{}\t{}\t{}\t{}\t{:.3f}\t{}\t{}\t{}\n", frame, layer, r.heads, r.min_slots, r.mean_slots,
                           r.max_slots, r.bytes_before, r.bytes_after);
    };
    for (const auto& r : layers) row(std::to_string(r.layer), r);
    row("all", total_of(layers));
    return out;
}

}  // namespace heads
