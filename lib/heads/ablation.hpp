#pragma once
// Head ablation (METHODS.md (a), the forward-only variant): for every head,
// the exact increase of the mean NLL of the calibration tokens when that head
// alone is zeroed, in nats (positive: the head helps). The tokens are scored
// in the windows of infer --ppl (eval/perplexity.hpp), so a head's score is
// ln PPL(head masked) − ln PPL. It does not cost a full pass per head: each
// window runs once whole, keeping the residual stream entering every layer,
// and a head of layer l reruns only layers l and after from that residual,
// together with other heads of layer l: a pass runs several masks at once
// (ForwardRequest::sequence_masks), so each weight matrix is read once for
// them all and the matmuls multiply more rows.

#include <cstdint>
#include <functional>
#include <span>
#include <vector>

#include "heads/head_table.hpp"
#include "heads/retrieval.hpp"
#include "model/session.hpp"

namespace heads {

struct AblationOptions {
    std::int64_t ctx = 0;  // window; 0: the model's context length
    std::function<void(std::int64_t done, std::int64_t total)> progress;  // heads done, after each pass
    std::int64_t variants = 0;  // most heads masked in one pass; 0: as many as ablation_variants allows
};

struct AblationResult {
    std::vector<std::vector<double>> delta;  // [n_layers][n_heads_l] mean NLL increase, nats
    double nll = 0;                          // mean NLL with every head
    std::int64_t count = 0, windows = 0, ctx = 0;  // predictions scored, windows, window length
    std::int64_t layer_runs = 0;             // layers run in all, against windows · n_layers · (1 + heads) for full passes
    std::int64_t passes = 0;                 // forward passes: one per window, then one per group of masked heads
};

// How many heads a pass masks at once: as many sequences of ctx rows
// (Session::bytes_per_row, every row's logits kept) as fit in
// kAblationPassBytes, at least one.
inline constexpr std::int64_t kAblationPassBytes = std::int64_t(256) << 20;
std::int64_t ablation_variants(const Session& session, std::int64_t ctx);

// Throws heads::Error (Param "ctx") when the tokens do not fill two windows.
// The session's head mask is used as the baseline and restored after.
AblationResult head_ablation(Session& session, std::span<const std::int32_t> tokens, const AblationOptions& options);

// What prune-heads --score writes: the head table with `ablation`, then
// `retrieval` (retrieval_scores on copy prompts from the same tokens), then
// the columns of infer --head-stats (HeadStats) over the ablation's windows.
HeadTable score_heads(Session& session, std::span<const std::int32_t> tokens, const AblationOptions& options,
                      const RetrievalOptions& retrieval);

}  // namespace heads
