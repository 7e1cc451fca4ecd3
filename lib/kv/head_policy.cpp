#include "kv/head_policy.hpp"

#include <algorithm>
#include <array>
#include <charconv>
#include <cmath>
#include <numeric>

#include <fmt/format.h>

#include "io/number.hpp"
#include "kv/budgets.hpp"
#include "tensor/error.hpp"
#include "tensor/quote.hpp"

namespace heads {
namespace {

constexpr std::array kMethods = {"window", "h2o", "snapkv", "pyramid", "adakv", "headkv", "razor", "duo"};

// The keys each method takes besides budget, sink and recent.
std::vector<std::string_view> extra_keys(std::string_view method) {
    if (method == "snapkv") return {"window", "pool"};
    if (method == "pyramid") return {"window", "pool", "beta"};
    if (method == "adakv") return {"window", "pool", "floor"};
    if (method == "headkv") return {"window", "pool", "beta", "by", "scores"};
    if (method == "razor" || method == "duo") return {"protect", "by", "scores"};
    return {};
}

double parse_real(std::string_view text) {
    double value = 0;
    const auto [end, error] = std::from_chars(text.data(), text.data() + text.size(), value);
    if (error != std::errc() || end != text.data() + text.size() || !std::isfinite(value)) return NAN;
    return value;
}

// "30%" -> 0.3 (0 < share <= 1); "1/8" is not taken, nor a percentage so
// small that its share rounds to 0 (5e-324%).
double parse_share(std::string_view text) {
    if (!text.ends_with('%')) return NAN;
    const double percent = parse_real(text.substr(0, text.size() - 1));
    const double share = percent / 100;
    return share > 0 && share <= 1 && std::isfinite(share) ? share : NAN;
}

std::string percent(double share) { return fmt::format("{:g}%", share * 100); }

// Keeps, in each head, at most its budget of slots; razor folds the dropped into one compensation slot.
class HeadBudgetPolicy final : public KvPolicy {
public:
    HeadBudgetPolicy(HeadPolicySpec spec, KvHeadScores head_scores)
        : spec_(std::move(spec)), head_scores_(std::move(head_scores)) {}

    std::string name() const override { return spec_.name(); }
    const KvBudgets* budgets() const override { return budgets_.empty() ? nullptr : &budgets_; }
    bool reads_whole_prompt() const override { return true; }

    void start(KvCache& cache) override {
        budgets_.clear();
        if (spec_.ranks()) cache.track_received(true, tracked_window());
    }

    void adopt(KvCache& cache, const KvFrameContents& frame) override {
        // A frame made by this eviction policy, its slots stored in any type, carries its budgets and scores.
        const bool made_here = eviction_policy(frame.info.policy) == name();
        budgets_ = made_here ? frame.info.budgets : KvBudgets{};
        if (!budgets_.empty() && budgets_.size() != std::size_t(cache.n_layers()))
            throw Error("the KV frame's budgets cover {} layers, its cache {}", budgets_.size(), cache.n_layers());
        const std::int64_t least = spec_.sink + spec_.recent + (spec_.compensates() ? 1 : 0);
        for (std::size_t l = 0; l < budgets_.size(); ++l)
            for (const auto b : budgets_[l])
                if (b >= 0 && b < least)
                    throw Error("the KV frame's kv.{}.budget holds {}, below the policy's sinks and recent slots ({})", l,
                                b, least);
        if (!spec_.ranks()) return;
        // The frame's own scores when this policy made it; else what infer --kv measured.
        const bool own = made_here && !frame.score.empty();
        const std::int64_t window = tracked_window();
        if (!own && window > 0 && !frame.received_recent.empty() && frame.recent_queries != window)
            throw Error("the KV frame's received_recent sums the last {} queries, the {} policy's window is {}",
                        frame.recent_queries, spec_.method, window);
        const KvSlotValues& source = own ? frame.score : window > 0 ? frame.received_recent : frame.received;
        if (source.empty())
            throw Error("the {} KV policy ranks slots by the attention they received, and the KV frame has none "
                        "(infer --kv writes it)",
                        spec_.method);
        cache.track_received(true, window);
        for (std::int64_t l = 0; l < cache.n_layers(); ++l) {
            const float* from = source[std::size_t(l)].data();
            for (std::int64_t g = 0; g < cache.n_kv_heads(l); ++g) {
                KvHead& head = cache.head(l, g);
                std::copy(from, from + head.slots, head.received.data());
                from += head.slots;
            }
        }
    }

    void apply(KvCache& cache, const KvStep& step) override {
        if (budgets_.empty()) budgets_ = settle_budgets(spec_, cache, step.next_position, head_scores_);
        for (std::int64_t l = 0; l < cache.n_layers(); ++l)
            for (std::int64_t g = 0; g < cache.n_kv_heads(l); ++g) {
                const std::int32_t budget = budgets_[std::size_t(l)][std::size_t(g)];
                if (budget >= 0) evict(cache, l, g, budget, step.next_position);
            }
    }

private:
    // The snapkv family ranks by the last queries' votes; h2o by every query's.
    std::int64_t tracked_window() const { return spec_.method == "h2o" ? 0 : spec_.window; }

    void evict(KvCache& cache, std::int64_t l, std::int64_t g, std::int64_t budget, std::int64_t next_position) {
        KvHead& head = cache.head(l, g);
        const std::int32_t* pos = head.pos.data();
        real_.clear();
        std::int64_t synthetic = -1;
        for (std::int64_t s = 0; s < head.slots; ++s) {
            if (pos[s] >= 0) real_.push_back(s);
            else if (pos[s] < -1) synthetic = s;
        }
        // Nothing to drop, no compensation slot: the head stays exactly as it is.
        if (std::int64_t(real_.size()) + (synthetic >= 0) <= budget) return;
        const std::int64_t room = budget - (spec_.compensates() ? 1 : 0);
        // Sinks: the lowest positions; recent: the last `recent` positions; the rest ranked.
        std::stable_sort(real_.begin(), real_.end(), [&](std::int64_t a, std::int64_t b) { return pos[a] < pos[b]; });
        keep_.clear();
        candidates_.clear();
        for (std::size_t i = 0; i < real_.size(); ++i) {
            const std::int64_t s = real_[i];
            if (std::int64_t(i) < spec_.sink || pos[s] >= next_position - spec_.recent) keep_.push_back(s);
            else candidates_.push_back(s);
        }
        slot_scores(scores_, spec_, head);
        const auto take = std::size_t(std::clamp<std::int64_t>(room - std::int64_t(keep_.size()), 0, std::int64_t(candidates_.size())));
        std::stable_sort(candidates_.begin(), candidates_.end(), [&](std::int64_t a, std::int64_t b) {
            const float sa = scores_[std::size_t(a)], sb = scores_[std::size_t(b)];
            return sa > sb || (sa == sb && pos[a] > pos[b]);
        });
        keep_.insert(keep_.end(), candidates_.begin(), candidates_.begin() + std::ptrdiff_t(take));
        if (synthetic >= 0) keep_.push_back(synthetic);
        std::sort(keep_.begin(), keep_.end());
        if (spec_.compensates()) fold(cache, l, g, take, synthetic);
        cache.keep(l, g, keep_);
        if (spec_.compensates()) place_compensation(cache, l, g);
    }

    // RazorAttention's compensation token: the mean key and value of every
    // slot dropped so far, at position -(n + 1) for n dropped (its logit gets + log n).
    void fold(const KvCache& cache, std::int64_t l, std::int64_t g, std::size_t taken, std::int64_t synthetic) {
        const KvHead& head = cache.head(l, g);
        const std::int64_t head_dim = cache.head_dim();
        std::int64_t n = synthetic >= 0 ? -std::int64_t(head.pos.data()[synthetic]) - 1 : 0;
        sum_k_.assign(std::size_t(head_dim), 0.0);
        sum_v_.assign(std::size_t(head_dim), 0.0);
        mean_k_.resize(std::size_t(head_dim));
        mean_v_.resize(std::size_t(head_dim));
        const auto add = [&](std::int64_t s, double times) {
            cache.read_key(l, g, s, mean_k_.data());
            cache.read_value(l, g, s, mean_v_.data());
            for (std::int64_t d = 0; d < head_dim; ++d) {
                sum_k_[std::size_t(d)] += times * mean_k_[std::size_t(d)];
                sum_v_[std::size_t(d)] += times * mean_v_[std::size_t(d)];
            }
        };
        if (synthetic >= 0) add(synthetic, double(n));
        for (std::size_t i = taken; i < candidates_.size(); ++i, ++n) add(candidates_[i], 1.0);
        dropped_ = n;
    }

    void place_compensation(KvCache& cache, std::int64_t l, std::int64_t g) {
        const std::int64_t head_dim = cache.head_dim();
        mean_k_.resize(std::size_t(head_dim));
        mean_v_.resize(std::size_t(head_dim));
        for (std::int64_t d = 0; d < head_dim; ++d) {
            mean_k_[std::size_t(d)] = float(sum_k_[std::size_t(d)] / double(dropped_));
            mean_v_[std::size_t(d)] = float(sum_v_[std::size_t(d)] / double(dropped_));
        }
        const auto position = std::int32_t(-(dropped_ + 1));
        KvHead& head = cache.head(l, g);
        for (std::int64_t s = 0; s < head.slots; ++s)
            if (head.pos.data()[s] < -1) {  // the one already there takes the new mean
                cache.write_key(l, g, s, mean_k_.data());
                cache.write_value(l, g, s, mean_v_.data());
                head.pos.data()[s] = position;
                return;
            }
        const std::int32_t at[] = {position};
        cache.append(l, g, mean_k_.data(), mean_v_.data(), head_dim, at);
    }

    HeadPolicySpec spec_;
    KvHeadScores head_scores_;
    KvBudgets budgets_;
    // Reused at every step (a policy object serves one sequence at a time).
    std::vector<std::int64_t> real_, keep_, candidates_;
    std::vector<float> scores_, mean_k_, mean_v_;
    std::vector<double> sum_k_, sum_v_;
    std::int64_t dropped_ = 0;
};

}  // namespace

bool HeadPolicySpec::ranks() const {
    return method == "h2o" || method == "snapkv" || method == "pyramid" || method == "adakv" || method == "headkv";
}

std::string HeadPolicySpec::name() const {
    std::string out = fmt::format("{}:budget={}:sink={}:recent={}", method,
                                  budget_share > 0 ? percent(budget_share) : std::to_string(budget_slots), sink, recent);
    for (const auto key : extra_keys(method)) {
        if (key == "window") out += fmt::format(":window={}", window);
        if (key == "pool") out += fmt::format(":pool={}", pool);
        if (key == "beta") out += fmt::format(":beta={:g}", beta);
        if (key == "floor") out += fmt::format(":floor={:g}", floor);
        if (key == "protect") out += fmt::format(":protect={}", percent(protect));
        if (key == "by") out += fmt::format(":by={}", by);
    }
    return out;
}

bool is_head_policy(std::string_view name) {
    const auto method = name.substr(0, name.find(':'));
    return std::find(kMethods.begin(), kMethods.end(), method) != kMethods.end() &&
           (method != "window" || name.find('=') != std::string_view::npos);
}

HeadPolicySpec parse_head_policy(std::string_view name) {
    HeadPolicySpec spec;
    std::string_view rest = name;
    const auto next = [&] {
        const auto colon = rest.find(':');
        const auto part = rest.substr(0, colon);
        rest = colon == std::string_view::npos ? std::string_view() : rest.substr(colon + 1);
        return part;
    };
    spec.method = std::string(next());
    if (spec.method == "razor") spec.protect = 0.15;
    if (spec.method == "duo") spec.protect = 0.25;
    if (spec.method == "pyramid") spec.beta = 20;
    if (spec.method == "headkv") spec.beta = 1.5;
    const auto allowed = extra_keys(spec.method);
    const auto bad = [&](std::string_view part, std::string_view want) {
        return Error("KV cache policy {}: bad {} ({})", quote(name), quote(part), want);
    };
    bool budget = false;
    while (!rest.empty()) {
        const auto part = next();
        const auto eq = part.find('=');
        const auto key = part.substr(0, eq), value = eq == std::string_view::npos ? std::string_view() : part.substr(eq + 1);
        if (eq == std::string_view::npos || value.empty()) throw bad(part, "KEY=VALUE");
        const bool known = key == "budget" || key == "sink" || key == "recent" ||
                           std::find(allowed.begin(), allowed.end(), key) != allowed.end();
        if (!known) throw Error("KV cache policy {}: {} takes no {}", quote(name), spec.method, quote(key));
        const auto count = parse_count<std::int32_t>(value);  // positions are int32: so is every count
        if (key == "budget") {
            budget = true;
            if (value.ends_with('%')) {
                spec.budget_share = parse_share(value);
                if (std::isnan(spec.budget_share)) throw bad(part, "a share of the cache above 0% and at most 100%, or slots per head");
            } else if (!count || *count < 1) {
                throw bad(part, "slots per head, at least 1, or a share such as 30%");
            } else {
                spec.budget_slots = *count;
            }
        } else if (key == "sink" || key == "recent" || key == "window" || key == "pool") {
            if (!count || (key != "sink" && *count < 1) || (key == "pool" && *count % 2 == 0))
                throw bad(part, key == "pool" ? "an odd count >= 1" : key == "sink" ? "a count >= 0" : "a count >= 1");
            (key == "sink" ? spec.sink : key == "recent" ? spec.recent : key == "window" ? spec.window : spec.pool) = *count;
        } else if (key == "protect") {
            spec.protect = parse_share(value);
            if (std::isnan(spec.protect)) throw bad(part, "a share of the KV heads such as 15%");
        } else if (key == "beta" || key == "floor") {
            const double x = parse_real(value);
            if (key == "beta" ? !(x >= 1) : !(x >= 0 && x <= 1)) throw bad(part, key == "beta" ? "a number >= 1" : "a share between 0 and 1");
            (key == "beta" ? spec.beta : spec.floor) = x;
        } else if (key == "by") {
            spec.by = std::string(value);
        } else {
            spec.scores = std::string(value);
        }
    }
    if (!budget) throw Error("KV cache policy {}: {} needs a budget (budget=30% or budget=SLOTS)", quote(name), spec.method);
    if (spec.head_aware() && spec.by.empty())
        throw Error("KV cache policy {}: {} needs the head table's column (by=COLUMN)", quote(name), spec.method);
    return spec;
}

std::unique_ptr<KvPolicy> make_head_policy(const HeadPolicySpec& spec, const KvHeadScores& head_scores) {
    return std::make_unique<HeadBudgetPolicy>(spec, head_scores);
}

}  // namespace heads
