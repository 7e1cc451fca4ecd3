#pragma once
// KV policies with a slot budget per KV head: `NAME:budget=B[:KEY=VALUE...]`
// (man/compress-kv.1). Each head keeps at most its budget of slots: its
// first `sink` positions (attention sinks), its last `recent` positions, and
// of the others the best by the policy's ranking; razor also folds what it
// drops into one compensation slot. Budgets are settled once per sequence,
// at the first apply (from the positions held then, for a share such as 30%)
// and then stay: they travel with a KV frame (kv.L.budget), so a consumer
// goes on applying exactly the same policy.
//
//   uniform      window   every head the same budget; ranks by recency
//                h2o      ... ranks by the attention each slot has received (H2O)
//                snapkv   ... by the votes of the last `window` queries, pooled over `pool` slots (SnapKV)
//                pyramid  snapkv's ranking, budgets falling linearly with depth (PyramidKV, beta)
//   head-aware   adakv    snapkv's ranking, each layer's budget spent on its heads' best slots
//                         together, with a per-head floor (Ada-KV)
//                headkv   snapkv's ranking, budgets from a head-table column (HeadKV's formula, beta)
//                razor    the top `protect` share of heads by a column keep everything, the others
//                         sinks + recent + one compensation token (RazorAttention)
//                duo      the same split, without compensation (DuoAttention's streaming heads)

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>

#include "kv/policy.hpp"

namespace heads {

struct HeadPolicySpec {
    std::string method;
    double budget_share = 0;          // budget=30% -> 0.3 (0 when the budget is in slots)
    std::int64_t budget_slots = 0;    // budget=64
    std::int64_t sink = 4, recent = 8;
    std::int64_t window = 32;         // snapkv family: the observation window (infer --kv's heads.recent_queries)
    std::int64_t pool = 5;            // snapkv family: the pooling kernel, in slots
    double protect = 0;               // razor, duo: share of KV heads kept whole
    double beta = 0;                  // pyramid, headkv
    double floor = 0.2;               // adakv: each head's floor, as a share of the layer's mean budget
    std::string by, scores;           // head-aware: the head table's column and file

    // Canonical form for heads.policy: every parameter, not the table's file.
    std::string name() const;
    bool head_aware() const { return method == "headkv" || method == "razor" || method == "duo"; }
    bool ranks() const;         // slots ranked by attention received (the cache tracks it)
    bool compensates() const { return method == "razor"; }
};

// Whether `name` is one of the methods above (with or without parameters).
bool is_head_policy(std::string_view name);
// Parses "NAME:budget=B:KEY=VALUE..."; throws heads::Error naming the bad part.
HeadPolicySpec parse_head_policy(std::string_view name);

std::unique_ptr<KvPolicy> make_head_policy(const HeadPolicySpec& spec, const KvHeadScores& head_scores);

}  // namespace heads
