#include "heads/ablation.hpp"

#include <fmt/format.h>

#include "eval/perplexity.hpp"
#include "heads/head_stats.hpp"
#include "ops/activation.hpp"

namespace heads {

AblationResult head_ablation(Session& session, std::span<const std::int32_t> tokens, const AblationOptions& options) {
    const Model& model = session.model();
    const LlamaConfig& c = model.config();
    const PplWindows cut = ppl_windows(model, tokens.size(), options.ctx);
    const HeadMask baseline = session.head_mask();

    AblationResult result;
    result.ctx = cut.ctx;
    result.windows = cut.count;
    result.count = cut.count * cut.scored();
    std::int64_t heads = 0;
    for (const auto& layer : c.layers) {
        result.delta.emplace_back(std::size_t(layer.n_heads()), 0.0);
        heads += layer.n_heads();
    }
    ForwardProbes probes;  // the residual leaving each layer but the last: what enters the next
    for (std::int64_t l = 0; l + 1 < c.n_layers; ++l) probes.hidden_layers.push_back(l);
    std::vector<std::int32_t> window;
    std::vector<float> row(std::size_t(model.vocab_size()));

    // The summed NLL of window w's scored predictions, running layers first_layer and after.
    auto window_nll = [&](std::int64_t w, std::int64_t first_layer, ForwardProbes* keep) {
        session.reset();
        ForwardRequest request;
        request.tokens = window;
        request.logits = LogitRows::all;
        request.logits_from = cut.first;
        request.probes = keep;
        request.first_layer = first_layer;
        if (first_layer > 0) request.residual = probes.hidden.at(first_layer - 1);
        const std::span<const float> logits = session.forward(request).logits;
        result.layer_runs += c.n_layers - first_layer;
        const auto targets = cut.targets(tokens, w);
        double sum = 0;
        for (std::size_t j = 0; j < targets.size(); ++j) {
            log_softmax(row, logits.subspan(j * row.size(), row.size()));
            sum -= double(row[std::size_t(targets[j])]);
        }
        return sum;
    };

    std::int64_t done = 0;
    for (std::int64_t w = 0; w < cut.count; ++w) {
        cut.window(window, tokens, w, c.bos_token_id);
        session.set_head_mask(baseline);
        const double base = window_nll(w, 0, &probes);
        result.nll += base;
        for (std::int64_t l = 0; l < c.n_layers; ++l)
            for (std::size_t i = 0; i < result.delta[std::size_t(l)].size(); ++i) {
                HeadMask mask = baseline;
                mask[std::size_t(l)][i] = 1;
                session.set_head_mask(std::move(mask));
                result.delta[std::size_t(l)][i] += window_nll(w, l, nullptr) - base;
                if (options.progress) options.progress(++done, cut.count * heads);
            }
    }
    session.set_head_mask(baseline);
    for (auto& layer : result.delta)
        for (double& delta : layer) delta /= double(result.count);
    result.nll /= double(result.count);
    return result;
}

HeadTable score_heads(Session& session, std::span<const std::int32_t> tokens, const AblationOptions& options,
                      const RetrievalOptions& retrieval_options) {
    const Model& model = session.model();
    // Too few tokens for the windows or the needle stop it here, before the long part.
    const PplWindows cut = ppl_windows(model, tokens.size(), options.ctx);
    const RetrievalResult retrieval = retrieval_scores(session, tokens, retrieval_options);
    const AblationResult ablation = head_ablation(session, tokens, options);
    HeadStats stats(model.config());
    std::vector<std::int32_t> window;
    for (std::int64_t w = 0; w < cut.count; ++w) {
        cut.window(window, tokens, w, model.config().bos_token_id);
        stats.add_sequence(session, window);
    }
    HeadTable table = stats.table(model, "prune-heads --score");
    table.comments.insert(table.comments.begin(),
                          fmt::format("prune-heads --score: ablation = mean NLL increase (nats) when the head alone "
                                      "is zeroed, over {} predictions in {} windows of {} tokens (mean NLL {:.6f})",
                                      ablation.count, ablation.windows, ablation.ctx, ablation.nll));
    table.comments.insert(
        table.comments.begin() + 1,
        fmt::format("prune-heads --score: retrieval = share of the copied needle pieces a head attended to most "
                    "as they were written, over {} copy prompts (seed {}, {} text tokens, a needle of {}, a cue of "
                    "{}); greedy copies {} of {} pieces right",
                    retrieval.prompts, retrieval_options.seed, retrieval.text, retrieval_options.needle,
                    retrieval_options.cue, retrieval.copied, retrieval.steps));
    table.columns.insert(table.columns.begin(), {"ablation", "retrieval"});
    std::size_t next = 0;  // HeadStats' rows: layer by layer, each layer's heads by index
    for (std::size_t l = 0; l < ablation.delta.size(); ++l)
        for (std::size_t i = 0; i < ablation.delta[l].size(); ++i) {
            auto& values = table.rows.at(next++).values;
            values.insert(values.begin(), {ablation.delta[l][i], retrieval.score[l][i]});
        }
    return table;
}

}  // namespace heads
