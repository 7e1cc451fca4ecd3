#include "heads/prune.hpp"

#include <algorithm>
#include <charconv>
#include <cmath>
#include <map>
#include <utility>

#include "io/number.hpp"
#include "tensor/error.hpp"
#include "tensor/quote.hpp"

namespace heads {

std::vector<LayerHeads> layout_without(const LlamaConfig& config, const HeadMask& removed) {
    if (removed.size() != config.layers.size())
        throw Error("a mask of {} layers for a model of {}", removed.size(), config.layers.size());
    std::vector<LayerHeads> layout;
    for (std::size_t l = 0; l < config.layers.size(); ++l) {
        const LayerHeads& from = config.layers[l];
        if (std::int64_t(removed[l].size()) != from.n_heads())
            throw Error("a mask of {} heads for layer {} of {}", removed[l].size(), l, from.n_heads());
        LayerHeads kept;
        std::vector<std::int32_t> new_kv_index(from.kv_head_ids.size(), -1);  // by old KV index
        for (std::size_t i = 0; i < from.query_head_ids.size(); ++i) {
            if (removed[l][i]) continue;
            std::int32_t& kv = new_kv_index[std::size_t(from.kv_head_of[i])];
            if (kv < 0) kv = 0;  // used; numbered below, in the old order
            kept.query_head_ids.push_back(from.query_head_ids[i]);
        }
        for (std::size_t g = 0; g < new_kv_index.size(); ++g)
            if (new_kv_index[g] >= 0) {
                new_kv_index[g] = std::int32_t(kept.kv_head_ids.size());
                kept.kv_head_ids.push_back(from.kv_head_ids[g]);
            }
        for (std::size_t i = 0; i < from.query_head_ids.size(); ++i)
            if (!removed[l][i]) kept.kv_head_of.push_back(new_kv_index[std::size_t(from.kv_head_of[i])]);
        layout.push_back(std::move(kept));
    }
    return layout;
}

std::int64_t heads_to_keep(std::string_view spec, std::int64_t total) {
    std::int64_t keep = 0;
    if (!spec.empty() && spec.back() == '%') {
        const std::string_view number = spec.substr(0, spec.size() - 1);
        double percent = 0;
        const auto [end, error] = std::from_chars(number.data(), number.data() + number.size(), percent);
        if (number.empty() || number.front() == '-' || error != std::errc() || end != number.data() + number.size() ||
            !(percent > 0 && percent <= 100))
            throw UsageError(Param{"keep"}, "{} is not a share of the heads (want P% with 0 < P <= 100)", quote(spec));
        keep = std::llround(percent / 100 * double(total));
        if (keep < 1) throw Error(Param{"keep"}, "{} of {} heads keeps no head", spec, total);
        return keep;
    }
    // Malformed (or no head at all) is bad usage whatever the model; more
    // heads than this model has is an error about the model.
    const auto count = parse_count(spec);
    if (!count || *count < 1)
        throw UsageError(Param{"keep"}, "{} is not a number of heads (N >= 1) nor a share P%", quote(spec));
    if (*count > total)
        throw Error(Param{"keep"}, "{} is not a number of heads from 1 to {}, nor a share P%", quote(spec), total);
    return *count;
}

HeadMask heads_to_remove(const LlamaConfig& config, const HeadTable& table, const RankedRemoval& how) {
    const std::size_t column = table.column(how.column);
    std::map<std::pair<std::int64_t, std::int64_t>, double> score;  // (layer, original id) → value
    for (const auto& row : table.rows) {
        if (!score.emplace(std::pair(row.layer, row.head), row.values[column]).second)
            throw Error("the head table has two rows for head {}.{}", row.layer, row.head);
    }
    struct Candidate {
        std::int64_t layer, index, id;
        double value;
    };
    std::vector<Candidate> candidates;
    HeadMask removed;
    for (std::size_t l = 0; l < config.layers.size(); ++l) {
        const auto& ids = config.layers[l].query_head_ids;
        removed.emplace_back(ids.size(), 0);
        for (std::size_t i = 0; i < ids.size(); ++i) {
            const auto found = score.find({std::int64_t(l), ids[i]});
            if (found == score.end())
                throw Error("the head table has no row for head {}.{} (layer, original id)", l, ids[i]);
            candidates.push_back({std::int64_t(l), std::int64_t(i), ids[i], found->second});
            score.erase(found);
        }
    }
    if (!score.empty())
        throw Error("the head table's head {}.{} is not in the model", score.begin()->first.first,
                    score.begin()->first.second);
    // nan is "unknown": never removed before a head with a score.
    const auto key = [&](const Candidate& c) {
        return std::isnan(c.value) ? INFINITY : how.reverse ? -c.value : c.value;
    };
    std::stable_sort(candidates.begin(), candidates.end(), [&](const Candidate& a, const Candidate& b) {
        if (key(a) != key(b)) return key(a) < key(b);
        return std::pair(a.layer, a.id) < std::pair(b.layer, b.id);
    });
    std::vector<std::int64_t> left;
    for (const auto& layer : config.layers) left.push_back(layer.n_heads());
    std::int64_t done = 0;
    for (const auto& c : candidates) {
        if (done == how.remove) break;
        if (left[std::size_t(c.layer)] <= how.min_per_layer) continue;
        removed[std::size_t(c.layer)][std::size_t(c.index)] = 1;
        --left[std::size_t(c.layer)];
        ++done;
    }
    if (done < how.remove)
        throw Error(Param{"min_per_layer"}, "keeping {} heads in every layer leaves {} heads to remove, not {}",
                    how.min_per_layer, done, how.remove);
    return removed;
}

std::int64_t count_heads(const HeadMask& mask) {
    std::int64_t n = 0;
    for (const auto& layer : mask) n += std::count(layer.begin(), layer.end(), std::uint8_t(1));
    return n;
}

}  // namespace heads
