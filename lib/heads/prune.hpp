#pragma once
// Which heads a pruning removes, and the layout they leave (man/prune-heads.1).
// Heads are chosen from an explicit list (index in the layer, as
// --mask-heads names them) or from a head table's score column (rows named by
// original id); either way the result is a HeadMask of the model's heads.
// Writing the smaller model is model/writer.hpp's job.

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "heads/head_list.hpp"
#include "heads/head_table.hpp"
#include "model/config.hpp"

namespace heads {

// The layout left when the heads `removed` marks leave `config`'s layers:
// the other query heads in their order, and the KV heads that still serve
// one of them (a KV head left without query heads goes too).
std::vector<LayerHeads> layout_without(const LlamaConfig& config, const HeadMask& removed);

// How many of `total` heads a keep spec leaves: "P%" (0 < P <= 100, rounded
// to the nearest head) or a count N (1 <= N <= total). Throws heads::Error
// (Param "keep") for anything else, or when it would keep no head.
std::int64_t heads_to_keep(std::string_view spec, std::int64_t total);

struct RankedRemoval {
    std::string column;              // the head table's score column
    std::int64_t remove = 0;         // how many heads go
    std::int64_t min_per_layer = 0;  // no layer is left with fewer heads than this (nor loses heads below it)
    bool reverse = false;            // remove the highest scores first instead of the lowest
};

// The `how.remove` heads ranked lowest by the column (highest with reverse),
// ties by layer then original id, "nan" never before a number; a head whose
// layer is down to min_per_layer is passed over. Every head of the model
// needs a row, and every row a head of the model. Throws heads::Error when a
// row or head is missing, or min_per_layer leaves fewer heads to remove
// (Param "min_per_layer").
HeadMask heads_to_remove(const LlamaConfig& config, const HeadTable& table, const RankedRemoval& how);

std::int64_t count_heads(const HeadMask& mask);

}  // namespace heads
