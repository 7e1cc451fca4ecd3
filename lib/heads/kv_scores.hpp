#pragma once
// Head-aware KV policies (razor, duo, headkv) allot budgets by a head-table
// column; the table names query heads by original id, the cache holds KV
// heads by index in the layer.

#include <memory>
#include <string>
#include <string_view>

#include "heads/head_table.hpp"
#include "kv/policy.hpp"
#include "model/model.hpp"

namespace heads {

// A column per KV head of the model: the highest value among the query heads
// it serves (a KV head matters as much as its most important reader; nan
// when none of them has a value). Throws heads::Error when the column is
// missing or a head of the model has no row.
KvHeadScores kv_head_scores(const LlamaConfig& config, const HeadTable& table, const std::string& column);

// The KV policy a spec names, its head table (scores=FILE) read and checked
// against the model when the spec has one.
std::unique_ptr<KvPolicy> make_kv_policy_for(const Model& model, std::string_view spec);

}  // namespace heads
