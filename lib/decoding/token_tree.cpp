#include "decoding/token_tree.hpp"

#include <algorithm>

namespace heads::decoding {

void TokenTree::reset(std::int32_t root_token) {
    nodes_.clear();
    nodes_.push_back({root_token, -1, 0, true, {}});
    candidate_count_ = 0;
}

std::int32_t TokenTree::add(std::int32_t parent, std::int32_t token, bool candidate) {
    const auto node = std::int32_t(nodes_.size());
    nodes_.push_back({token, parent, nodes_[parent].depth + 1, candidate, {}});
    if (candidate) {
        nodes_[parent].children.push_back(node);
        ++candidate_count_;
    }
    return node;
}

std::vector<std::int32_t> TokenTree::add_path(std::int32_t from, std::span<const std::int32_t> tokens) {
    std::vector<std::int32_t> path;
    std::int32_t at = from;
    for (const auto token : tokens) {
        const auto& kids = nodes_[at].children;
        const auto same =
            std::find_if(kids.begin(), kids.end(), [&](std::int32_t k) { return nodes_[k].token == token; });
        at = same != kids.end() ? *same : add(at, token, true);
        path.push_back(at);
    }
    return path;
}

std::int32_t TokenTree::max_depth() const {
    std::int32_t deepest = 0;
    for (const auto& node : nodes_)
        if (node.candidate) deepest = std::max(deepest, node.depth);
    return deepest;
}

void TokenTree::tokens(std::vector<std::int32_t>& out) const {
    out.clear();
    for (const auto& node : nodes_) out.push_back(node.token);
}

void TokenTree::positions(std::int32_t root_position, std::vector<std::int32_t>& out) const {
    out.clear();
    for (const auto& node : nodes_) out.push_back(root_position + node.depth);
}

void TokenTree::mask(std::vector<std::uint8_t>& out) const {
    const std::size_t n = nodes_.size();
    out.assign(n * n, 0);
    for (std::size_t i = 0; i < n; ++i)
        for (std::int32_t j = std::int32_t(i); j >= 0; j = nodes_[j].parent) out[i * n + std::size_t(j)] = 1;
}

}  // namespace heads::decoding
