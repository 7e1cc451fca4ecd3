#include "heads/head_list.hpp"

#include <algorithm>
#include <optional>
#include <string>

#include "io/number.hpp"
#include "io/read_file.hpp"
#include "tensor/error.hpp"
#include "tensor/quote.hpp"

namespace heads {
namespace {

// LAYER.HEAD, or nullopt.
std::optional<HeadRef> parse_head(std::string_view item) {
    const auto dot = item.find('.');
    const auto layer = dot == std::string_view::npos ? std::nullopt : parse_count(item.substr(0, dot));
    const auto head = dot == std::string_view::npos ? std::nullopt : parse_count(item.substr(dot + 1));
    if (!layer || !head) return std::nullopt;
    return HeadRef{*layer, *head};
}

// The heads of `text` (items between commas and white space), appended to
// `heads`; the bad item, if any.
std::optional<std::string> parse_heads(std::string_view text, std::vector<HeadRef>& heads) {
    std::string item;
    for (const char c : std::string(text) + ",") {
        if (c == ',' || c == ' ' || c == '\t' || c == '\n' || c == '\r') {
            if (!item.empty()) {
                const auto head = parse_head(item);
                if (!head) return item;
                heads.push_back(*head);
            }
            item.clear();
        } else {
            item += c;
        }
    }
    return std::nullopt;
}

constexpr const char* kWant = "want LAYER.HEAD, e.g. 3.5";

}  // namespace

std::vector<HeadRef> parse_head_list(std::string_view spec) {
    std::vector<HeadRef> heads;
    if (spec.empty() || spec.front() != '@') {
        // Given on the command line: a bad item is bad usage.
        if (const auto bad = parse_heads(spec, heads)) throw UsageError("bad head {} ({})", quote(*bad), kWant);
        return heads;
    }
    const std::string path(spec.substr(1));
    const std::string content = read_file(path, "the list of heads");
    std::size_t line_number = 0;
    for (std::size_t start = 0; start < content.size();) {  // each line up to its '#'
        const std::size_t end = std::min(content.find('\n', start), content.size());
        const std::string_view line(content.data() + start, end - start);
        ++line_number;
        if (const auto bad = parse_heads(line.substr(0, line.find('#')), heads))
            throw Error("{}:{}: bad head {} ({})", path, line_number, quote(*bad), kWant);
        start = end + 1;
    }
    return heads;
}

HeadMask head_mask(const LlamaConfig& config, const std::vector<HeadRef>& heads) {
    HeadMask off;
    for (const auto& layer : config.layers) off.emplace_back(std::size_t(layer.n_heads()), 0);
    for (const auto& ref : heads) {
        if (ref.layer >= config.n_layers)
            throw Error("head {}.{} does not exist (the model has layers 0 to {})", ref.layer, ref.head, config.n_layers - 1);
        const std::int64_t n = config.layers[std::size_t(ref.layer)].n_heads();
        if (ref.head >= n) throw Error("head {}.{} does not exist (layer {} has {} heads)", ref.layer, ref.head, ref.layer, n);
        off[std::size_t(ref.layer)][std::size_t(ref.head)] = 1;
    }
    return off;
}

void merge_head_masks(HeadMask& mask, const HeadMask& more) {
    if (mask.size() != more.size())
        throw Error("head masks of {} and {} layers cannot be merged", mask.size(), more.size());
    for (std::size_t l = 0; l < mask.size(); ++l) {
        if (mask[l].size() != more[l].size())
            throw Error("head masks with {} and {} heads in layer {} cannot be merged", mask[l].size(), more[l].size(),
                        l);
        for (std::size_t h = 0; h < mask[l].size(); ++h) mask[l][h] |= more[l][h];
    }
}

}  // namespace heads
