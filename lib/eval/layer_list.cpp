#include "eval/layer_list.hpp"

#include <algorithm>

#include "io/number.hpp"
#include "tensor/error.hpp"
#include "tensor/quote.hpp"

namespace heads {

std::vector<std::int64_t> parse_layer_list(std::string_view spec, std::int64_t n_layers, std::string_view option) {
    std::vector<std::int64_t> layers;
    if (spec == "all") {
        for (std::int64_t l = 0; l < n_layers; ++l) layers.push_back(l);
        return layers;
    }
    std::size_t start = 0;
    while (start <= spec.size()) {
        const std::size_t comma = std::min(spec.find(',', start), spec.size());
        const std::string_view item = spec.substr(start, comma - start);
        const auto layer = parse_count(item);
        if (!layer)
            throw UsageError("{} {}: {} is not a layer number (want L,L,... or all)", option, quote(spec), quote(item));
        if (*layer >= n_layers) throw UsageError("{} {}: layers are numbered 0 to {}", option, quote(spec), n_layers - 1);
        // A frame holds one tensor per layer: a layer given twice is a slip, not a request for two.
        if (std::find(layers.begin(), layers.end(), *layer) != layers.end())
            throw UsageError("{} {}: layer {} is given twice", option, quote(spec), *layer);
        layers.push_back(*layer);
        start = comma + 1;
    }
    return layers;
}

}  // namespace heads
