#pragma once
// Speculative decoding, exact. Every step runs the pending token and a tree
// of drafted candidates in ONE forward pass (TokenTree), then walks the tree
// from the root: at each node the target's distribution p there (the
// sampling chain on that row's logits) decides with speculative sampling's
// rule (sampling/speculative.hpp) whether a child is accepted; the first
// node where nothing is accepted yields one token drawn from what is left of
// p (a correction, or a bonus token after a fully accepted path). So a step
// writes 1 + accepted tokens, the output distribution is the target's, and
// under greedy the output is token for token plain greedy's. Only the rows
// of the accepted path stay in the KV cache.
//
// Drafters: a smaller model with the same tokenizer (--draft), n-grams of
// the context (--prompt-lookup), lookahead decoding's Jacobi window and
// n-gram pool (--lookahead).

#include <cstdint>
#include <memory>
#include <span>
#include <string>

#include "decoding/context_guard.hpp"
#include "decoding/token_tree.hpp"
#include "kv/kv_frame.hpp"
#include "model/session.hpp"
#include "sampling/params.hpp"
#include "sampling/rng.hpp"

namespace heads::decoding {

// How far one step may reach: candidates at most `depth` deep (the tokens
// still to write, less the one the step always adds), any row at most
// `room` positions after the root.
struct DraftLimits {
    int depth = 0;
    std::int64_t room = 0;
};

class Drafter {
public:
    virtual ~Drafter() = default;
    virtual std::string name() const = 0;
    // Takes in a new prompt (a draft model runs it into its own session).
    virtual void prime(std::span<const std::int32_t> prompt) { (void)prompt; }
    // Adds candidates continuing `context` (whose last token is the tree's
    // root, pending) and any helper rows, within `limits`.
    virtual void draft(std::span<const std::int32_t> context, TokenTree& tree, const DraftLimits& limits,
                       sampling::Rng& rng) = 0;
    // The distribution a candidate was drawn from; empty for a deterministic draft.
    virtual std::span<const float> q(std::int32_t node) const {
        (void)node;
        return {};
    }
    // After verification: the pass's logits [tree.size(), vocab] and the
    // accepted path (the root, then accepted candidates).
    virtual void update(const TokenTree& tree, std::span<const float> logits, std::span<const std::int32_t> path) {
        (void)tree, (void)logits, (void)path;
    }
    // Forward passes of a draft model.
    std::int64_t forwards() const { return forwards_; }

protected:
    std::int64_t forwards_ = 0;
};

// --draft DIR: the draft model samples up to `max_tokens` tokens with the
// same sampling chain, one pass each; drafting stops early where the draft's
// most likely token has probability below p_min (a rule that does not look
// at the drawn token, so exactness holds under sampling too).
std::unique_ptr<Drafter> make_model_drafter(Session& draft, const sampling::SamplingParams& sampling,
                                            const ContextGuard& guard, int max_tokens, float p_min);
// --prompt-lookup N: up to N tokens that followed the latest earlier
// occurrence of the context's last n-gram (n from ngram_max down to ngram_min).
std::unique_ptr<Drafter> make_lookup_drafter(int max_tokens, int ngram_min, int ngram_max);
// --lookahead W,N,G (Fu et al. 2024): a window of W positions times N-1
// Jacobi levels runs beside the candidates in the same pass; each pass
// yields W n-grams of N tokens into a pool, and up to G pool n-grams that
// start with the pending token are the candidates.
std::unique_ptr<Drafter> make_lookahead_drafter(int window, int ngram, int candidates);

}  // namespace heads::decoding
