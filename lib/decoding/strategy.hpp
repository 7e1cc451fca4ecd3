#pragma once
// The strategies decode offers. prime() puts a prompt into a strategy's
// sessions: every token but the last runs (or comes from a KV frame); the
// last one, the "pending" token, is the first thing run() runs, so every
// strategy starts the same way whatever the prompt's source.

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "decoding/context_guard.hpp"
#include "decoding/generation.hpp"
#include "kv/kv_frame.hpp"
#include "model/session.hpp"
#include "sampling/chain.hpp"

namespace heads::decoding {

// What -v reports after a run (summed over prompts).
struct Stats {
    std::int64_t tokens = 0;          // generated
    std::int64_t forwards = 0;        // target forward passes after the prompt
    std::int64_t drafted = 0;         // speculative: candidate tokens verified
    std::int64_t accepted = 0;        // speculative: candidates accepted
    std::int64_t draft_forwards = 0;  // draft model passes
    double seconds = 0;               // generating, prompts excluded
};

// A forward request for `tokens` at the session's next positions (causal).
inline ForwardRequest request_for(std::span<const std::int32_t> tokens, LogitRows logits = LogitRows::last) {
    ForwardRequest request;
    request.tokens = tokens;
    request.logits = logits;
    return request;
}

// Runs prompt[0, n-1) into `session` in chunks that fit (or, with `frame`,
// loads its cache and drops the last position). `hidden`, when given,
// receives the final hidden state of every run row [n-1, d_model] (a frame
// has none: then it is an error). Returns the number of forward passes.
std::int64_t prime_session(Session& session, std::span<const std::int32_t> prompt, const KvFrameContents* frame,
                           const ContextGuard& guard, std::vector<float>* hidden = nullptr);

class Strategy {
public:
    virtual ~Strategy() = default;
    // prompt: at least one token; frame: its KV cache (from infer --kv), or null.
    virtual void prime(std::span<const std::int32_t> prompt, const KvFrameContents* frame) = 0;
    virtual void run(Generation& generation) = 0;
    // "greedy", "beam search (4 beams)", "speculative: prompt lookup" ...
    virtual std::string name() const = 0;
    Stats& stats() { return stats_; }

protected:
    Stats stats_;
};

// DeCoRe: contrast with a copy of the model whose chosen heads are masked.
struct ContrastParams {
    float alpha = 0;   // the contrast at maximal entropy
    float cutoff = 0;  // plausibility: drop tokens below cutoff * max p of the full model (0: off)
};

// Greedy or sampling, one token per forward pass; with `masked` (a session
// of the same model with heads masked), DeCoRe's contrast:
//   z = (1 + a) z_full - a z_masked,  a = alpha * H(p_full) / ln(vocab_size)
// (the entropy-scaled contrast of DeCoRe_entropy, normalized so that alpha is
// the contrast at maximal entropy), then the sampling chain on z.
// masked, masked_guard: DeCoRe's masked copy and the guard of its own KV
// policy (a policy settles per-sequence state, such as budgets, per session).
std::unique_ptr<Strategy> make_plain(Session& session, const sampling::SamplingParams& sampling,
                                     const ContextGuard& guard, Session* masked = nullptr,
                                     const ContextGuard* masked_guard = nullptr, const ContrastParams& contrast = {});

struct BeamOptions {
    int beams = 1;
    float length_penalty = 1;
    bool early_stopping = false;
    int n_best = 1;
};
// Beam search over the chain's processed log-probabilities (bias, penalties,
// no-repeat-ngram; no temperature). Writes its result at the end, n_best
// sequences per prompt.
std::unique_ptr<Strategy> make_beam(Session& session, const sampling::SamplingParams& sampling,
                                    const ContextGuard& guard, const BeamOptions& options);

// Contrastive search (Su et al. 2022): among the top_k tokens, the one
// maximizing (1 - alpha) p(v) - alpha max_j cos(h_v, h_j) over the final
// hidden states h_j of the context. All top_k candidates run in one pass.
std::unique_ptr<Strategy> make_contrastive(Session& session, const sampling::SamplingParams& sampling,
                                           const ContextGuard& guard, float alpha, int top_k);

// Speculative decoding with a draft source; see speculative.hpp.
class Drafter;
std::unique_ptr<Strategy> make_speculative(Session& session, const sampling::SamplingParams& sampling,
                                           const ContextGuard& guard, std::unique_ptr<Drafter> drafter);

}  // namespace heads::decoding
