#pragma once
// infer --hidden and --attention: a list of layers.

#include <cstdint>
#include <string_view>
#include <vector>

namespace heads {

// "L,L,..." or "all" → layer numbers, in the order given; throws
// heads::UsageError "OPTION 'SPEC': ..." for anything else, a layer the model
// lacks or a layer given twice.
std::vector<std::int64_t> parse_layer_list(std::string_view spec, std::int64_t n_layers, std::string_view option);

}  // namespace heads
