#pragma once
// The rows of one speculative forward pass, as a tree. Node 0 is the pending
// token (the last one chosen, not yet run); every other node continues its
// parent and sits one position after it. A row sees exactly its ancestors and
// itself, so one forward pass scores every branch at once: the drafted
// candidates (verified after the pass) and any helper rows a drafter adds
// (lookahead's Jacobi window, never verified).
//
// Nodes are rows in the order they were added, parents before children.

#include <cstdint>
#include <span>
#include <vector>

namespace heads::decoding {

class TokenTree {
public:
    void reset(std::int32_t root_token);

    // Adds a row continuing `parent`; `candidate` rows are verified, helper rows are not.
    std::int32_t add(std::int32_t parent, std::int32_t token, bool candidate);
    // Adds a drafted continuation of `from`, sharing the candidate nodes it
    // already has; returns the nodes of the path (one per token).
    std::vector<std::int32_t> add_path(std::int32_t from, std::span<const std::int32_t> tokens);

    std::int32_t size() const { return std::int32_t(nodes_.size()); }
    std::int32_t token(std::int32_t node) const { return nodes_[node].token; }
    std::int32_t parent(std::int32_t node) const { return nodes_[node].parent; }
    std::int32_t depth(std::int32_t node) const { return nodes_[node].depth; }
    bool candidate(std::int32_t node) const { return nodes_[node].candidate; }
    // The candidate children of a node, in the order they were added.
    const std::vector<std::int32_t>& candidates(std::int32_t node) const { return nodes_[node].children; }
    // Candidate nodes other than the root.
    std::int32_t candidate_count() const { return candidate_count_; }
    std::int32_t max_depth() const;

    // The forward pass's inputs: tokens, positions root_position + depth and
    // the [size, size] visibility mask (row i sees j iff j is i or an ancestor).
    void tokens(std::vector<std::int32_t>& out) const;
    void positions(std::int32_t root_position, std::vector<std::int32_t>& out) const;
    void mask(std::vector<std::uint8_t>& out) const;

private:
    struct Node {
        std::int32_t token;
        std::int32_t parent;
        std::int32_t depth;
        bool candidate;
        std::vector<std::int32_t> children;  // candidate children
    };
    std::vector<Node> nodes_;
    std::int32_t candidate_count_ = 0;
};

}  // namespace heads::decoding
