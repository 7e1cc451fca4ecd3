#include "eval/perplexity.hpp"

#include <algorithm>
#include <cmath>
#include <optional>
#include <stdexcept>
#include <vector>

#include <fmt/format.h>

#include "eval/logprob_base.hpp"
#include "io/output.hpp"
#include "ops/activation.hpp"
#include "safetensors/keys.hpp"
#include "safetensors/read.hpp"
#include "safetensors/write.hpp"
#include "tensor/error.hpp"

namespace heads {
namespace {

// Mean and standard error of the mean from running sums.
struct Moments {
    double sum = 0, sum_squares = 0;
    std::int64_t count = 0;
    void add(double x) {
        sum += x;
        sum_squares += x * x;
        ++count;
    }
    double mean() const { return count ? sum / double(count) : 0; }
    double stderr_mean() const {
        if (count < 2) return 0;
        const double variance = sum_squares / double(count) - mean() * mean();
        return variance > 0 ? std::sqrt(variance / double(count - 1)) : 0;
    }
};

// The base run's saved log-probabilities, checked against this run.
struct Base {
    Frame frame;
    const float* log_probs = nullptr;  // [count, vocab]
};

Base open_base(const std::filesystem::path& path, const Model& model, std::int64_t ctx, std::span<const std::int32_t> targets) {
    Base base;
    base.frame = read_frame_file(path);
    base.log_probs = check_logprob_base(base.frame, path.string(), model.vocab_size(), ctx, targets);
    return base;
}

}  // namespace

PplWindows ppl_windows(const Model& model, std::size_t n_tokens, std::int64_t ctx) {
    PplWindows windows;
    windows.ctx = ctx > 0 ? ctx : model.context_length();
    windows.count = std::int64_t(n_tokens) / windows.ctx;
    if (windows.ctx < 4)
        throw Error(Param{"ctx"}, "a window of {} tokens is too small to score (at least 4)", windows.ctx);
    if (windows.count < 2)
        throw Error(Param{"ctx"},
                    "{} tokens are fewer than 2 × ctx ({}): nothing to score; give more text or a "
                    "smaller window",
                    n_tokens, windows.ctx);
    windows.first = windows.ctx / 2;
    return windows;
}

void PplWindows::window(std::vector<std::int32_t>& out, std::span<const std::int32_t> tokens, std::int64_t w,
                        std::int32_t bos) const {
    out.assign(tokens.begin() + w * ctx, tokens.begin() + (w + 1) * ctx);
    out[0] = bos;
}

PerplexityResult perplexity(Session& session, std::span<const std::int32_t> tokens, const PerplexityOptions& options) {
    const Model& model = session.model();
    const std::int64_t vocab = model.vocab_size();
    const PplWindows cut = ppl_windows(model, tokens.size(), options.ctx);
    const std::int64_t ctx = cut.ctx, windows = cut.count, first = cut.first, per_window = cut.scored();

    std::vector<std::int32_t> targets;
    for (std::int64_t w = 0; w < windows; ++w) {
        const auto scored = cut.targets(tokens, w);
        targets.insert(targets.end(), scored.begin(), scored.end());
    }

    std::optional<Base> base;
    if (!options.kl_base.empty()) base = open_base(options.kl_base, model, ctx, targets);
    std::optional<AtomicFile> saved;
    std::optional<FrameWriter> writer;
    if (!options.save_logits.empty()) {
        saved.emplace(options.save_logits);
        Metadata metadata;
        metadata[std::string(keys::kind)] = std::string(kinds::logprobs);
        metadata[std::string(keys::model)] = model.fingerprint();
        metadata[std::string(keys::ctx)] = std::to_string(ctx);
        const std::int64_t count = std::int64_t(targets.size());
        writer.emplace(saved->get(), std::vector<TensorSpec>{{"targets", DType::I32, {count}}, {"log_probs", DType::F32, {count, vocab}}},
                       metadata);
        writer->write(std::span<const std::int32_t>(targets));
    }

    Moments nll, kl, base_nll;
    KlResult kl_result;
    std::vector<std::int32_t> window;
    std::vector<float> row(static_cast<std::size_t>(vocab));
    std::vector<float> window_rows;  // [per_window, vocab] from options.window_logits
    for (std::int64_t w = 0; w < windows; ++w) {
        cut.window(window, tokens, w, model.config().bos_token_id);
        std::span<const float> logits;
        if (options.window_logits) {
            options.window_logits(window, first, window_rows);
            if (std::int64_t(window_rows.size()) != per_window * vocab)
                throw std::logic_error("perplexity: a window's logits are not [ctx - 1 - first, vocab]");
            logits = window_rows;
        } else {
            session.reset();
            ForwardRequest request;
            request.tokens = window;
            request.logits = LogitRows::all;
            request.logits_from = first;
            logits = session.forward(request).logits;  // rows first..ctx-1: the last predicts past the window
        }
        for (std::int64_t j = 0; j < per_window; ++j) {
            const std::size_t index = std::size_t(w * per_window + j);
            log_softmax(row, logits.subspan(std::size_t(j * vocab), std::size_t(vocab)));
            nll.add(-double(row[std::size_t(targets[index])]));
            if (writer) writer->write(std::span<const float>(row));
            if (base) {
                const float* b = base->log_probs + index * std::size_t(vocab);
                double divergence = 0;
                for (std::int64_t v = 0; v < vocab; ++v) divergence += std::exp(double(b[v])) * (double(b[v]) - row[std::size_t(v)]);
                divergence = std::max(divergence, 0.0);
                kl.add(divergence);
                kl_result.max = std::max(kl_result.max, divergence);
                if (argmax({b, std::size_t(vocab)}) == argmax(row)) ++kl_result.same_top;
                base_nll.add(-double(b[targets[index]]));
            }
        }
        if (options.progress) options.progress(w + 1, windows, std::exp(nll.mean()));
    }
    if (writer) {
        writer->finish();
        saved->commit();
    }

    PerplexityResult result;
    result.ppl = std::exp(nll.mean());
    result.stderr_ppl = result.ppl * nll.stderr_mean();
    result.count = nll.count;
    result.windows = windows;
    result.ctx = ctx;
    if (base) {
        kl_result.mean = kl.mean();
        kl_result.stderr_mean = kl.stderr_mean();
        kl_result.base_ppl = std::exp(base_nll.mean());
        result.kl = kl_result;
    }
    return result;
}

std::string format_perplexity(const PerplexityResult& r) {
    std::string text = fmt::format("PPL = {:.4f} +/- {:.5f}\n", r.ppl, r.stderr_ppl);
    text += fmt::format("# {} predictions in {} windows of {} tokens\n", r.count, r.windows, r.ctx);
    if (r.kl) {
        text += fmt::format("PPL base = {:.4f}\n", r.kl->base_ppl);
        text += fmt::format("KLD = {:.6f} +/- {:.6f}\n", r.kl->mean, r.kl->stderr_mean);
        text += fmt::format("KLD max = {:.6f}\n", r.kl->max);
        text += fmt::format("same top token = {:.3f}% ({}/{})\n", 100.0 * double(r.kl->same_top) / double(r.count),
                            r.kl->same_top, r.count);
    }
    return text;
}

}  // namespace heads
