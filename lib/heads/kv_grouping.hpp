#pragma once
// Grouping each layer's KV heads by what they compute, for MHA to GQA
// (prune-heads --to-gqa G --group-by similarity): heads whose keys and values
// on the calibration tokens are alike share one mean-pooled KV head.
//
// The distance of KV heads a and b of a layer is
//   d(a, b) = ‖K_a − K_b‖² / E_K + ‖V_a − V_b‖² / E_V,
// K_a the keys head a writes for every calibration token (its [tokens,
// head_dim] rows, concatenated), V_a its values, E_K and E_V the layer's
// mean ‖K_a‖² and ‖V_a‖² over its KV heads (so keys and values weigh alike
// whatever their scale). Keys are compared after RoPE, which rotates the two
// heads' keys of one position alike and so changes no distance. Pooling a
// group S of m heads replaces each member's keys by their mean, which (the
// projections being linear) is what the pooled k_proj computes, and loses
//   Σ_{a∈S} ‖K_a − mean_S K‖² = (1/m) Σ_{a<b∈S} ‖K_a − K_b‖²
// (and the same for values): with groups of equal size, the sum of d over
// the pairs inside the groups is what pooling loses of the activations. The
// clustering makes that sum small: balanced greedy agglomeration (the closest
// two free heads start a group, then the free head closest to the group, by
// summed distance, joins until it is full), then swaps of two heads between
// groups while one lowers the sum.

#include <cstdint>
#include <span>
#include <vector>

#include "model/session.hpp"

namespace heads {

// [n_kv_heads][n_kv_heads] distances, symmetric, 0 on the diagonal.
using Distances = std::vector<std::vector<double>>;
// Groups of head indices: each group ascending, the groups by their first member.
using Groups = std::vector<std::vector<std::int64_t>>;

// The distances above for every layer ([n_layers]), from the calibration
// tokens run in windows of `ctx` (0: the model's context length), each from an
// empty cache with BOS in place of its first token; the BOS slot of each
// window, the same in every window, is left out. The session's head mask
// does not matter (it acts after the keys and values are made). Throws
// heads::Error when there are fewer than two tokens.
std::vector<Distances> kv_head_distances(Session& session, std::span<const std::int32_t> tokens, std::int64_t ctx);

// `distances.size()` heads into groups of `size` (which must divide it) that
// make the summed distance inside the groups small, as described above.
// Deterministic: ties go to the lower head index. Size 1 gives each head alone.
Groups balanced_groups(const Distances& distances, std::int64_t size);

// Each layer's KV heads in `kv_heads` groups of equal size by the distances of
// kv_head_distances ([n_layers]; the source KV head indices of each group).
// Throws heads::Error when the model cannot be pooled so (check_pooling in
// model/writer.hpp), before it runs anything.
std::vector<Groups> similar_kv_groups(Session& session, std::span<const std::int32_t> tokens, std::int64_t kv_heads,
                                      std::int64_t ctx);

}  // namespace heads
