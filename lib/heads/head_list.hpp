#pragma once
// Lists of heads as users write them: "L.H,L.H,..." (layer, then the index
// of the head within that layer's query heads, both from 0), or "@FILE" with
// such entries separated by commas or whitespace ('#' starts a comment).
// Head tables name heads by original id instead (LayerHeads, head_table.hpp).

#include <cstdint>
#include <string_view>
#include <vector>

#include "model/config.hpp"

namespace heads {

// A head by its index in the layer.
struct HeadRef {
    std::int64_t layer = 0;
    std::int64_t head = 0;  // index in layers[layer] (LayerHeads::query_head_ids)
    bool operator==(const HeadRef&) const = default;
};

// Throws heads::Error "bad head 'X' (want LAYER.HEAD)" or "FILE: cannot read".
std::vector<HeadRef> parse_head_list(std::string_view spec);

// Which heads are masked (their output zeroed): off[l][h] for head h of
// layer l (Session::set_head_mask takes it).
using HeadMask = std::vector<std::vector<std::uint8_t>>;

// off[l][h] = 1 for the listed heads; throws heads::Error "head L.H does not
// exist (layer L has N heads)" for a head the model lacks.
HeadMask head_mask(const LlamaConfig& config, const std::vector<HeadRef>& heads);

// Masks in `mask` every head `more` masks too (both masks of one model).
void merge_head_masks(HeadMask& mask, const HeadMask& more);

}  // namespace heads
