#include "heads/kv_scores.hpp"

#include <cmath>
#include <map>
#include <utility>

#include "tensor/error.hpp"

namespace heads {

KvHeadScores kv_head_scores(const LlamaConfig& config, const HeadTable& table, const std::string& column) {
    const std::size_t c = table.column(column);
    std::map<std::pair<std::int64_t, std::int64_t>, double> by_head;  // (layer, original id) -> value
    for (const auto& row : table.rows) by_head[{row.layer, row.head}] = row.values[c];
    KvHeadScores scores;
    for (std::int64_t l = 0; l < config.n_layers; ++l) {
        const LayerHeads& heads = config.layers[std::size_t(l)];
        auto& layer = scores.emplace_back(std::size_t(heads.n_kv_heads()), NAN);
        for (std::int64_t i = 0; i < heads.n_heads(); ++i) {
            const auto found = by_head.find({l, heads.query_head_ids[std::size_t(i)]});
            if (found == by_head.end())
                throw Error("the head table has no row for head {}.{} of the model", l, heads.query_head_ids[std::size_t(i)]);
            double& value = layer[std::size_t(heads.kv_head_of[std::size_t(i)])];
            if (!std::isnan(found->second) && (std::isnan(value) || found->second > value)) value = found->second;
        }
    }
    return scores;
}

std::unique_ptr<KvPolicy> make_kv_policy_for(const Model& model, std::string_view spec) {
    const KvPolicyTable table = kv_policy_table(spec);
    if (table.file.empty()) return make_kv_policy(spec);
    return make_kv_policy(spec, kv_head_scores(model.config(), read_head_table(table.file, model.fingerprint()), table.column));
}

}  // namespace heads
