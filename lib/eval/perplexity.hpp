#pragma once
// Perplexity the way llama-perplexity computes it (without --ppl-stride):
// the tokens are cut into windows of ctx (the tail is dropped); each window
// starts with BOS in place of its first token and runs from an empty cache;
// the predictions of its second half are scored (positions ctx/2 .. ctx-2
// predict the next token). PPL = exp(mean nll), with the standard error
// PPL · sqrt((mean(nll²) − mean(nll)²) / (count − 1)).
//
// The scored log-probabilities can be saved, and a later run (a pruned or
// compressed model) compared with them: KL(base ‖ this) per prediction, its
// mean ± standard error and maximum, and how often both pick the same top token.

#include <cstdint>
#include <filesystem>
#include <functional>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "model/session.hpp"

namespace heads {

struct PerplexityOptions {
    std::int64_t ctx = 0;                   // window; 0: the model's context length
    std::filesystem::path save_logits;      // write the scored log-probabilities (a safetensors file)
    std::filesystem::path kl_base;          // compare with a file written by save_logits
    std::function<void(std::int64_t done, std::int64_t total, double ppl)> progress;  // after each window
    // How a window's scored rows get their logits: from the window [ctx] and
    // the first scored row, fills [ctx - 1 - first, vocab_size] (rows
    // first..ctx-2). Empty: one forward pass over the window. infer --ppl
    // --kv-policy scores them as decode meets them (decoding/forced.hpp).
    std::function<void(std::span<const std::int32_t> window, std::int64_t first, std::vector<float>& logits)>
        window_logits;
};

struct KlResult {
    double mean = 0, stderr_mean = 0, max = 0;
    std::int64_t same_top = 0;   // predictions where both runs' most likely token agree
    double base_ppl = 0;
};

struct PerplexityResult {
    double ppl = 0, stderr_ppl = 0;
    std::int64_t count = 0, windows = 0, ctx = 0;
    std::optional<KlResult> kl;
};

// The windows perplexity() cuts the tokens into (other scorers of the same
// tokens, such as head ablation, use the same ones).
struct PplWindows {
    std::int64_t ctx = 0, count = 0;  // window length, number of windows
    std::int64_t first = 0;           // rows first..ctx-2 of a window are scored, each predicting the next token
    std::int64_t scored() const { return ctx - 1 - first; }  // predictions scored per window

    // Window w of `tokens` into `out` [ctx], BOS in place of its first token.
    void window(std::vector<std::int32_t>& out, std::span<const std::int32_t> tokens, std::int64_t w,
                std::int32_t bos) const;
    // The tokens window w's scored rows predict [scored()].
    std::span<const std::int32_t> targets(std::span<const std::int32_t> tokens, std::int64_t w) const {
        return tokens.subspan(std::size_t(w * ctx + first + 1), std::size_t(scored()));
    }
};

// ctx 0 is the model's context length. Throws heads::Error (Param "ctx")
// for a window under 4 tokens or fewer than 2·ctx tokens.
PplWindows ppl_windows(const Model& model, std::size_t n_tokens, std::int64_t ctx);

// Throws heads::Error when there are fewer than 2·ctx tokens, or the base
// file does not match (other tokens, ctx or vocabulary).
PerplexityResult perplexity(Session& session, std::span<const std::int32_t> tokens, const PerplexityOptions& options);

// What infer --ppl prints: "PPL = 49.1901 +/- 0.67212" and, with a base,
// the KL lines.
std::string format_perplexity(const PerplexityResult& result);

}  // namespace heads
