#pragma once
// How a budgeted KV policy (head_policy.hpp) shares its budget among KV
// heads, and what it ranks a head's slots by.

#include <cstdint>
#include <vector>

#include "kv/head_policy.hpp"
#include "kv/kv_cache.hpp"

namespace heads {

// The slots each head of a cache holding `n_positions` positions may keep
// under `spec` ([n_layers][n_kv_heads_l], -1: the whole head). Never below
// sink + recent (+1 for a compensation slot). head_scores: the spec's
// head-table column per KV head (head-aware methods); throws heads::Error
// when a method needs it and it is empty.
KvBudgets settle_budgets(const HeadPolicySpec& spec, const KvCache& cache, std::int64_t n_positions,
                         const KvHeadScores& head_scores);

// What head (l, g)'s slots rank by, higher kept first, one per slot:
// the position (recency) for a policy that does not rank by attention, else
// the received mass (h2o), else that mass averaged over `pool` neighbouring
// slots (SnapKV's avg_pool1d, zero-padded at the ends).
void slot_scores(std::vector<float>& out, const HeadPolicySpec& spec, const KvHead& head);

}  // namespace heads
