#pragma once
// Drafting from n-grams: the two draft-free sources of speculative decoding.
//
// prompt_lookup() (Saxena 2023; transformers' prompt_lookup_num_tokens): the
// last n tokens of the context, for n from ngram_max down to ngram_min, are
// looked up earlier in the context; the tokens that followed their latest
// earlier occurrence are the draft.
//
// NgramPool (lookahead decoding, Fu et al. 2024): n-grams collected from the
// Jacobi iterations, kept per first token, at most G per token (the oldest
// goes first), without duplicates.

#include <cstdint>
#include <deque>
#include <span>
#include <unordered_map>
#include <vector>

namespace heads::decoding {

// Up to `max_tokens` drafted tokens continuing `context` (empty when no
// n-gram of the context's end occurred before).
std::vector<std::int32_t> prompt_lookup(std::span<const std::int32_t> context, int ngram_min, int ngram_max,
                                        int max_tokens);

class NgramPool {
public:
    // n-grams of `n` tokens (a first token and n - 1 that follow), at most
    // `per_token` kept for each first token.
    NgramPool(int n, int per_token) : n_(n), per_token_(per_token) {}

    // Adds first, rest[0..n-2]; returns false when it was there already.
    bool add(std::int32_t first, std::span<const std::int32_t> rest);
    // The continuations (n - 1 tokens each) known for `first`, newest first.
    std::vector<std::span<const std::int32_t>> find(std::int32_t first) const;
    std::size_t size() const { return count_; }
    void clear() {
        pool_.clear();
        count_ = 0;
    }

private:
    int n_;
    int per_token_;
    std::size_t count_ = 0;
    std::unordered_map<std::int32_t, std::deque<std::vector<std::int32_t>>> pool_;
};

}  // namespace heads::decoding
