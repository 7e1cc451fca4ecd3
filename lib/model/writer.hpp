#pragma once
// Writing a model directory with attention heads taken out (prune-heads),
// or with its KV heads mean-pooled into fewer (MHA to GQA, in contiguous
// groups or in groups given):
// the source's weights, the removed heads' q_proj rows and o_proj columns
// gone and the k_proj/v_proj rows of KV heads left without query heads gone
// (or, mask-only, every shape kept and the removed heads' o_proj columns
// zeroed); config.json with the new head_layout and a record of the edit;
// the tokenizer files copied. Dtypes and the shard files stay as they were.
// Tensors stream from the mapped source straight into the new files (no
// copy of the model in memory). The directory is built under a temporary
// name beside the target and renamed into place when complete, so the
// target is whole or absent; the source is only read.

#include <filesystem>
#include <string>
#include <vector>

#include "model/config.hpp"

namespace heads {

struct HeadEdit {
    // [n_layers] the heads each layer keeps, by original id: a subset of the
    // source's layer, each kept query head served by the KV head that served it.
    std::vector<LayerHeads> keep;
    bool mask_only = false;  // keep every shape (and config.json's layout); zero the other heads' o_proj columns
    std::string selection;   // how the heads were chosen, for the record (e.g. "--by ablation --keep 75%")
    bool replace = false;    // an existing target is replaced (else refused)
    // > 0 (MHA to GQA, METHODS.md (h)): no head is removed (`keep` is not
    // read); each layer's KV heads are mean-pooled in groups into this many
    // (the k_proj and v_proj rows of a group averaged) and config.json gets
    // num_key_value_heads = kv_heads. The source must have no head_layout,
    // and kv_heads must divide its KV heads.
    std::int64_t kv_heads = 0;
    // With kv_heads: [n_layers][kv_heads] the source KV heads each pooled KV
    // head averages, each layer's a partition of its KV heads into groups of
    // equal size (pooled KV head g serves the query heads its members
    // served); empty: contiguous groups (g·m, ..., g·m + m − 1). When every
    // group is contiguous config.json stays stock; otherwise it gets a
    // head_layout.
    std::vector<std::vector<std::vector<std::int64_t>>> kv_groups = {};
    std::string group_by = "contiguous";  // how the groups were chosen, for the record
};

// Throws heads::Error unless a model of this config can be mean-pooled into
// `kv_heads` KV heads per layer (a stock layout whose KV heads it divides).
void check_pooling(const LlamaConfig& source, std::int64_t kv_heads);

// Throws heads::Error when the edit does not fit the source's layout, the
// target exists (and !replace) or is the source, or a write fails; a
// temporary directory it made is removed first.
void write_edited_model(const std::filesystem::path& source, const std::filesystem::path& target, const HeadEdit& edit);

// The config.json key holding the list of edits made to a model (man/heads.7).
inline constexpr const char* kHeadEditsKey = "heads_edits";

}  // namespace heads
