#include "kv/budgets.hpp"

#include <algorithm>
#include <cmath>
#include <numeric>

#include "tensor/error.hpp"

namespace heads {
namespace {

std::int64_t minimum_budget(const HeadPolicySpec& spec) {
    return spec.sink + spec.recent + (spec.compensates() ? 1 : 0);
}

// Real slots of a head (not synthetic): the "cache" a budget is a share of.
std::int64_t real_slots(const KvHead& head) {
    std::int64_t n = 0;
    for (std::int64_t s = 0; s < head.slots; ++s) n += head.pos.data()[s] >= 0;
    return n;
}

const KvHeadScores& needed(const KvHeadScores& head_scores, const HeadPolicySpec& spec, const KvCache& cache) {
    if (head_scores.empty())
        throw Error("the {} KV policy settles budgets from a head table: give one (scores=FILE, by=COLUMN), or a KV "
                    "frame that carries its budgets",
                    spec.method);
    if (std::int64_t(head_scores.size()) != cache.n_layers())
        throw Error("the head scores cover {} layers, the cache has {}", head_scores.size(), cache.n_layers());
    return head_scores;
}

// A head-table value usable as a weight: nan and negative count as 0.
double weight(double value) { return std::isnan(value) || value < 0 ? 0.0 : value; }

// RazorAttention / DuoAttention: the top `protect` share of all KV heads by
// the column keep everything; the others share what is left of the budget.
KvBudgets split_budgets(const HeadPolicySpec& spec, const KvCache& cache, std::int64_t n, std::int64_t per_head,
                        const KvHeadScores& scores) {
    struct Ranked { double score; std::int64_t l, g; };
    std::vector<Ranked> heads;
    for (std::int64_t l = 0; l < cache.n_layers(); ++l)
        for (std::int64_t g = 0; g < cache.n_kv_heads(l); ++g)
            heads.push_back({weight(scores[std::size_t(l)][std::size_t(g)]), l, g});
    std::stable_sort(heads.begin(), heads.end(), [](const Ranked& a, const Ranked& b) { return a.score > b.score; });
    const auto total = std::int64_t(heads.size());
    const std::int64_t kept = std::clamp<std::int64_t>(std::llround(spec.protect * double(total)), 1, total);
    // What the whole budget allows beyond the protected heads, shared by the others.
    const std::int64_t rest = total > kept ? (per_head * total - kept * n) / (total - kept) : 0;
    KvBudgets budgets;
    for (std::int64_t l = 0; l < cache.n_layers(); ++l)
        budgets.emplace_back(std::size_t(cache.n_kv_heads(l)), std::int32_t(std::max(rest, minimum_budget(spec))));
    for (std::int64_t i = 0; i < kept; ++i) budgets[std::size_t(heads[std::size_t(i)].l)][std::size_t(heads[std::size_t(i)].g)] = -1;
    return budgets;
}

// PyramidKV: per-layer budgets (beyond the recent window) in an arithmetic
// sequence from 2b - b/beta down to b/beta, mean b.
KvBudgets pyramid_budgets(const HeadPolicySpec& spec, const KvCache& cache, std::int64_t per_head) {
    const std::int64_t layers = cache.n_layers();
    const double base = double(std::max<std::int64_t>(per_head - spec.recent, 0));
    const double low = base / spec.beta, high = 2 * base - low;
    KvBudgets budgets;
    for (std::int64_t l = 0; l < layers; ++l) {
        const double share = layers > 1 ? high - double(l) * (high - low) / double(layers - 1) : base;
        const auto b = std::max<std::int64_t>(std::llround(share) + spec.recent, minimum_budget(spec));
        budgets.emplace_back(std::size_t(cache.n_kv_heads(l)), std::int32_t(b));
    }
    return budgets;
}

// HeadKV (ReasonSnapKVCluster): p = s / sum s over every head; beyond the
// recent window, each head gets a floor of b - floor(b/beta) and a share p of
// the pool floor(b/beta) x heads.
KvBudgets headkv_budgets(const HeadPolicySpec& spec, const KvCache& cache, std::int64_t per_head,
                         const KvHeadScores& scores) {
    double sum = 0;
    std::int64_t heads = 0;
    for (std::int64_t l = 0; l < cache.n_layers(); ++l)
        for (std::int64_t g = 0; g < cache.n_kv_heads(l); ++g, ++heads) sum += weight(scores[std::size_t(l)][std::size_t(g)]);
    const std::int64_t base = std::max<std::int64_t>(per_head - spec.recent, 0);
    const auto pooled = std::int64_t(std::floor(double(base) / spec.beta));
    const double pool = double(pooled * heads);
    KvBudgets budgets;
    for (std::int64_t l = 0; l < cache.n_layers(); ++l) {
        auto& layer = budgets.emplace_back();
        for (std::int64_t g = 0; g < cache.n_kv_heads(l); ++g) {
            const double p = sum > 0 ? weight(scores[std::size_t(l)][std::size_t(g)]) / sum : 1.0 / double(heads);
            const std::int64_t b = std::llround(p * pool + double(base - pooled)) + spec.recent;
            layer.push_back(std::int32_t(std::max(b, minimum_budget(spec))));
        }
    }
    return budgets;
}

// Ada-KV: a layer's budget (b per head) goes to its heads' best slots
// together, each head first getting a floor; a head's budget is its floor
// plus its slots among the layer's best of the rest.
KvBudgets adakv_budgets(const HeadPolicySpec& spec, const KvCache& cache, std::int64_t per_head) {
    const std::int64_t floor = std::max<std::int64_t>(std::llround(spec.floor * double(per_head)), minimum_budget(spec));
    KvBudgets budgets;
    std::vector<float> ranked;
    struct Candidate { float score; std::int64_t g; };
    std::vector<Candidate> rest;
    for (std::int64_t l = 0; l < cache.n_layers(); ++l) {
        const std::int64_t n_kv_heads = cache.n_kv_heads(l);
        rest.clear();
        for (std::int64_t g = 0; g < n_kv_heads; ++g) {
            slot_scores(ranked, spec, cache.head(l, g));
            std::sort(ranked.begin(), ranked.end(), std::greater<>());
            for (std::size_t i = std::size_t(std::min<std::int64_t>(floor, std::int64_t(ranked.size()))); i < ranked.size(); ++i)
                rest.push_back({ranked[i], g});
        }
        const auto extra = std::size_t(std::max<std::int64_t>(per_head * n_kv_heads - floor * n_kv_heads, 0));
        const std::size_t take = std::min(extra, rest.size());
        std::partial_sort(rest.begin(), rest.begin() + std::ptrdiff_t(take), rest.end(),
                          [](const Candidate& a, const Candidate& b) { return a.score > b.score || (a.score == b.score && a.g < b.g); });
        auto& layer = budgets.emplace_back(std::size_t(n_kv_heads), std::int32_t(floor));
        for (std::size_t i = 0; i < take; ++i) ++layer[std::size_t(rest[i].g)];
    }
    return budgets;
}

}  // namespace

KvBudgets settle_budgets(const HeadPolicySpec& spec, const KvCache& cache, std::int64_t n_positions,
                         const KvHeadScores& head_scores) {
    // Per head, what the budget allows (a share of the positions held, or slots).
    std::int64_t longest = 0;
    for (std::int64_t l = 0; l < cache.n_layers(); ++l)
        for (std::int64_t g = 0; g < cache.n_kv_heads(l); ++g) longest = std::max(longest, real_slots(cache.head(l, g)));
    const std::int64_t n = std::max(longest, n_positions);
    const std::int64_t per_head = spec.budget_share > 0 ? std::llround(spec.budget_share * double(n)) : spec.budget_slots;
    if (spec.method == "razor" || spec.method == "duo")
        return split_budgets(spec, cache, n, per_head, needed(head_scores, spec, cache));
    if (spec.method == "pyramid") return pyramid_budgets(spec, cache, per_head);
    if (spec.method == "headkv") return headkv_budgets(spec, cache, per_head, needed(head_scores, spec, cache));
    if (spec.method == "adakv") return adakv_budgets(spec, cache, per_head);
    KvBudgets budgets;
    for (std::int64_t l = 0; l < cache.n_layers(); ++l)
        budgets.emplace_back(std::size_t(cache.n_kv_heads(l)), std::int32_t(std::max(per_head, minimum_budget(spec))));
    return budgets;
}

void slot_scores(std::vector<float>& out, const HeadPolicySpec& spec, const KvHead& head) {
    const std::int64_t n = head.slots;
    out.resize(std::size_t(n));
    if (!spec.ranks()) {
        for (std::int64_t s = 0; s < n; ++s) out[std::size_t(s)] = float(head.pos.data()[s]);
        return;
    }
    const float* mass = head.received.data();
    if (spec.method == "h2o" || spec.pool <= 1) {
        std::copy(mass, mass + n, out.begin());
        return;
    }
    const std::int64_t half = spec.pool / 2;
    for (std::int64_t s = 0; s < n; ++s) {
        float sum = 0;
        for (std::int64_t t = std::max<std::int64_t>(s - half, 0); t <= std::min(s + half, n - 1); ++t) sum += mass[t];
        out[std::size_t(s)] = sum / float(spec.pool);
    }
}

}  // namespace heads
