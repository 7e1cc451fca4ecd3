#include "kv/policy.hpp"

#include <charconv>
#include <optional>
#include <utility>
#include <vector>

#include <fmt/format.h>

#include "io/number.hpp"
#include "kv/head_policy.hpp"
#include "tensor/error.hpp"
#include "tensor/quote.hpp"

namespace heads {
namespace {

// Moves keys (RoPE applied) to other positions by rotating them further.
class Rotator {
public:
    explicit Rotator(const Rope& rope)
        : rope_(rope), inv_freq_(std::size_t(rope.head_dim / 2)), cos_(inv_freq_.size()), sin_(inv_freq_.size()) {
        rope_inv_freq(inv_freq_, rope, std::max<std::int64_t>(rope.max_position_embeddings, 1));
    }
    // Slot s's key, RoPE applied at some position p, becomes the key at p + delta
    // (read back from the cache's slot type and stored in it again).
    void rotate(KvCache& cache, std::int64_t l, std::int64_t g, std::int64_t s, std::int32_t delta) {
        key_.resize(std::size_t(rope_.head_dim));
        cache.read_key(l, g, s, key_.data());
        rotate(key_.data(), delta);
        cache.write_key(l, g, s, key_.data());
    }
    // key [head_dim], RoPE applied at some position p: becomes the key at p + delta.
    void rotate(float* key, std::int32_t delta) {
        rope_tables(cos_.data(), sin_.data(), {&delta, 1}, inv_freq_);
        rope_apply({.x = key, .rows = 1, .row_stride = rope_.head_dim, .n_heads = 1, .head_dim = rope_.head_dim,
                    .cos = cos_.data(), .sin = sin_.data()});
    }

private:
    Rope rope_;
    std::vector<double> inv_freq_;
    std::vector<float> cos_, sin_, key_;
};

class WindowPolicy final : public KvPolicy {
public:
    WindowPolicy(std::int64_t sink, std::int64_t recent) : sink_(sink), recent_(recent) {}
    std::string name() const override { return fmt::format("window:{}:{}", sink_, recent_); }
    bool slides() const override { return true; }
    std::int64_t span() const override { return sink_ + recent_; }

    void apply(KvCache& cache, const KvStep& step) override {
        const std::int64_t first_recent = step.next_position - recent_;
        if (first_recent <= sink_) return;  // nothing has left the window yet
        if (!step.rope) throw Error("the window KV policy needs the model's RoPE");
        if (!rotator_) rotator_.emplace(*step.rope);  // a policy object serves one model
        auto& keep = keep_;
        for (std::int64_t l = 0; l < cache.n_layers(); ++l)
            for (std::int64_t g = 0; g < cache.n_kv_heads(l); ++g) {
                KvHead& head = cache.head(l, g);
                const std::int32_t* pos = head.pos.data();
                keep.clear();
                std::int64_t sinks = 0;
                for (std::int64_t s = 0; s < head.slots; ++s) {
                    const bool synthetic = pos[s] < 0 && pos[s] != -1;
                    if (synthetic || pos[s] >= first_recent) {
                        keep.push_back(s);
                    } else if (pos[s] >= 0 && sinks < sink_) {
                        keep.push_back(s);
                        ++sinks;
                    }
                }
                if (std::int64_t(keep.size()) != head.slots) cache.keep(l, g, keep);
                // The sinks sit right before the recent window.
                std::int64_t i = 0;
                for (std::int64_t s = 0; s < head.slots && i < sinks; ++s) {
                    std::int32_t& p = head.pos.data()[s];
                    if (p < 0 || p >= first_recent) continue;
                    const auto target = std::int32_t(first_recent - sinks + i++);
                    if (p != target) {
                        rotator_->rotate(cache, l, g, s, target - p);
                        p = target;
                    }
                }
            }
    }

private:
    std::int64_t sink_, recent_;
    // Reused at every step (a policy object serves one sequence at a time).
    std::optional<Rotator> rotator_;
    std::vector<std::int64_t> keep_;
};

// An eviction policy whose cache stores its slots in a smaller type: the
// inner policy acts, then every slot (those to come too) is quantized. The
// first step's slots are quantized once it has run, and the prompt runs whole
// first (reads_whole_prompt) in the session's KV type, so that decode from
// ids quantizes the same cache that infer --kv's frame (made with the same
// --kv-type) through compress-kv does.
class QuantizedPolicy final : public KvPolicy {
public:
    QuantizedPolicy(std::unique_ptr<KvPolicy> inner, SlotType type) : inner_(std::move(inner)), type_(type) {}
    std::string name() const override { return fmt::format("{}+{}", inner_->name(), slot_type_name(type_)); }
    void apply(KvCache& cache, const KvStep& step) override {
        inner_->apply(cache, step);
        cache.set_slot_type(type_);
    }
    bool slides() const override { return inner_->slides(); }
    std::int64_t span() const override { return inner_->span(); }
    void start(KvCache& cache) override {
        cache.set_slot_type(cache.start_type());  // a new sequence's prompt runs as infer --kv's
        inner_->start(cache);
    }
    void adopt(KvCache& cache, const KvFrameContents& frame) override { inner_->adopt(cache, frame); }
    bool reads_whole_prompt() const override { return true; }
    const KvBudgets* budgets() const override { return inner_->budgets(); }

private:
    std::unique_ptr<KvPolicy> inner_;
    SlotType type_;
};

// "razor:...+q8" -> ("razor:...", q8); no known suffix: (name, nullopt).
std::pair<std::string_view, std::optional<SlotType>> split_slot_type(std::string_view name) {
    const auto plus = name.rfind('+');
    if (plus == std::string_view::npos) return {name, std::nullopt};
    const auto type = slot_type_from_name(name.substr(plus + 1));
    if (!type) return {name, std::nullopt};
    return {name.substr(0, plus), type};
}

std::int64_t window_count(std::string_view text, std::string_view what) {
    const auto value = parse_count<std::int32_t>(text);  // positions are int32
    if (!value) throw Error("KV cache policy window: bad {} {} (a count >= 0)", what, quote(text));
    return *value;
}

}  // namespace

std::unique_ptr<KvPolicy> make_kv_policy(std::string_view spec, const KvHeadScores& head_scores) {
    const auto [name, type] = split_slot_type(spec);
    if (type) {
        if (*type == SlotType::f32) throw Error("KV cache policy {}: slots are f32 without a suffix (+bf16, +q8 or +q4)", quote(spec));
        if (name.empty()) throw Error("KV cache policy {}: +{} follows a policy (e.g. full+{})", quote(spec), slot_type_name(*type), slot_type_name(*type));
        if (split_slot_type(name).second) throw Error("KV cache policy {}: slots have one type, not two", quote(spec));
        return std::make_unique<QuantizedPolicy>(make_kv_policy(name, head_scores), *type);
    }
    if (name == "full" || name.empty()) return std::make_unique<FullPolicy>();
    if (is_head_policy(name)) return make_head_policy(parse_head_policy(name), head_scores);
    if (name.starts_with("window:")) {
        const auto args = name.substr(7);
        const auto colon = args.find(':');
        if (colon == std::string_view::npos)
            throw Error("KV cache policy {}: window takes SINK:RECENT (e.g. window:4:252)", quote(name));
        const std::int64_t sink = window_count(args.substr(0, colon), "sink count");
        const std::int64_t recent = window_count(args.substr(colon + 1), "recent count");
        if (recent < 1) throw Error("KV cache policy {}: the recent window must hold at least 1 position", quote(name));
        return std::make_unique<WindowPolicy>(sink, recent);
    }
    throw Error("unknown KV cache policy {} (heads knows: full, window:SINK:RECENT, and with budget=B: window, h2o, "
                "snapkv, pyramid, adakv, headkv, razor, duo; any of them +bf16, +q8 or +q4)",
                quote(name));
}

std::string_view eviction_policy(std::string_view name) { return split_slot_type(name).first; }

KvPolicyTable kv_policy_table(std::string_view name) {
    const std::string_view eviction = eviction_policy(name);
    if (!is_head_policy(eviction)) return {};
    const HeadPolicySpec spec = parse_head_policy(eviction);
    return {spec.scores, spec.by};
}

void shift_positions(KvCache& cache, std::int32_t from, std::int32_t delta, const Rope& rope) {
    Rotator rotator(rope);
    for (std::int64_t l = 0; l < cache.n_layers(); ++l)
        for (std::int64_t g = 0; g < cache.n_kv_heads(l); ++g) {
            KvHead& head = cache.head(l, g);
            for (std::int64_t s = 0; s < head.slots; ++s) {
                std::int32_t& p = head.pos.data()[s];
                if (p < from) continue;
                rotator.rotate(cache, l, g, s, delta);
                p += delta;
            }
        }
}

}  // namespace heads
