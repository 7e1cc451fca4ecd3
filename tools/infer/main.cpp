// infer: one forward pass per id line; writes logits, hidden states,
// attention and the KV cache as safetensors frames, or the head table
// (--head-stats), or the perplexity of the whole input (--ppl). man/infer.1.
#include <memory>
#include <optional>

#include <CLI/CLI.hpp>
#include <fmt/format.h>

#include "cli/ids.hpp"
#include "cli/options.hpp"
#include "cli/progress.hpp"
#include "cli/run.hpp"
#include "decoding/forced.hpp"
#include "eval/frames.hpp"
#include "eval/perplexity.hpp"
#include "heads/head_list.hpp"
#include "heads/head_stats.hpp"
#include "heads/kv_scores.hpp"
#include "io/output.hpp"
#include "model/model.hpp"
#include "model/session.hpp"
#include "safetensors/write.hpp"
#include "tensor/error.hpp"

using namespace heads;

int main(int argc, char** argv) {
    CLI::App app{"Run a model over token id lines: logits, hidden states, attention, KV cache, head statistics, "
                 "perplexity",
                 "infer"};
    std::string model_dir, output, logits = "last", hidden, attention, mask, precision = "auto", kv_type = "auto";
    std::string save_logits, kl_base, kv_policy;
    int threads = 0;
    std::vector<std::string> inputs;
    bool kv = false, ppl = false, head_stats = false;
    std::int64_t ctx = 0;
    cli::add_model_option(app, model_dir);
    cli::add_threads_option(app, threads);
    cli::add_output_option(app, output);
    app.add_option("--logits", logits, "logits frame: of the last position, of all, or none")
        ->check(CLI::IsMember({"last", "all", "none"}));
    app.add_option("--hidden", hidden, "hidden-state frame: the residual after layers L,... (or all)");
    app.add_option("--attention", attention, "attention frame: probabilities of layers L,... (or all)");
    app.add_flag("--kv", kv, "KV cache frame, with the attention each slot received");
    app.add_option("--mask-heads", mask, "zero these heads' outputs: L.H,... or @FILE");
    app.add_flag("--head-stats", head_stats, "write the head table (TSV) over all lines instead of frames");
    app.add_flag("--ppl", ppl, "perplexity of the whole input (llama-perplexity's method)");
    cli::at_least(app.add_option("--ctx", ctx, "--ppl window; else the longest line allowed (default: the model's context)"),
                  1);
    app.add_option("--save-logits", save_logits, "--ppl: save the scored log-probabilities to FILE");
    app.add_option("--kl-base", kl_base, "--ppl: KL divergence against log-probabilities saved in FILE");
    app.add_option("--kv-policy", kv_policy,
                   "--ppl: score each window's second half as decode meets it, one token at a time, under this KV "
                   "policy (decode(1))")
        ->type_name("SPEC");
    cli::add_precision_option(app, precision);
    cli::add_kv_type_option(app, kv_type);
    app.add_option("files", inputs, "id lines (default: stdin)");

    // How infer spells the library's parameters, for its messages (heads::Param).
    const cli::FlagNames flags{{"ctx", "--ctx"},
                               {"hidden_layers", "--hidden"},
                               {"attention_layers", "--attention"},
                               {"kv_policy", "--kv-policy"},
                               {"context_shift", "--kv-policy"}};
    return cli::run(app, argc, argv, [&] {
        const bool frame_options = logits != "last" || !hidden.empty() || !attention.empty() || kv;
        if (ppl && (head_stats || frame_options)) throw UsageError("--ppl writes no frames and no head table");
        if (head_stats && frame_options) throw UsageError("--head-stats writes the head table instead of frames");
        if (!ppl && (!save_logits.empty() || !kl_base.empty() || !kv_policy.empty()))
            throw UsageError("--save-logits, --kl-base and --kv-policy need --ppl");
        if (ctx < 0) throw UsageError("--ctx must be positive");

        Context context(cli::thread_count(threads));
        LoadOptions load;
        load.precision = precision_named(precision);
        const auto model = Model::load(context, cli::find_model(model_dir), load);
        const LlamaConfig& config = model->config();
        FrameRequest request;
        request.logits = logits == "all" ? LogitRows::all : logits == "none" ? LogitRows::none : LogitRows::last;
        if (!hidden.empty()) request.hidden_layers = parse_layer_list(hidden, config.n_layers, "--hidden");
        if (!attention.empty()) request.attention_layers = parse_layer_list(attention, config.n_layers, "--attention");
        request.kv = kv;
        const std::int64_t longest = ctx > 0 ? ctx : model->context_length();
        Session session(model, context,
                        {.capacity = std::min<std::int64_t>(longest, 4096), .kv_type = slot_type_from_name(kv_type)});
        if (!mask.empty()) session.set_head_mask(head_mask(config, parse_head_list(mask)));

        cli::Output out(output);
        cli::IdReader reader(inputs, model->vocab_size());
        cli::Progress progress("infer");
        std::vector<std::int32_t> ids;
        if (ppl) {
            std::vector<std::int32_t> tokens;
            while (reader.next(ids)) tokens.insert(tokens.end(), ids.begin(), ids.end());
            PerplexityOptions options{ctx, save_logits, kl_base, nullptr, nullptr};
            // The same policy code decode runs: the prompt primed under it, then a step per token.
            std::unique_ptr<KvPolicy> policy;
            std::optional<decoding::ContextGuard> guard;
            if (!kv_policy.empty()) {
                try {
                    policy = make_kv_policy(kv_policy);  // the spec alone first: a bad one is bad usage
                } catch (const Error& error) {
                    throw UsageError(Param{"kv_policy"}, "{}", error.what());
                }
                policy = make_kv_policy_for(*model, kv_policy);
                guard.emplace(*model, policy.get(), -1);
                options.window_logits = [&](std::span<const std::int32_t> window, std::int64_t first,
                                            std::vector<float>& logits) {
                    decoding::forced_logits(session, *guard, window.first(std::size_t(first) + 1),
                                            window.subspan(std::size_t(first) + 1), logits);
                };
            }
            options.progress = [&](std::int64_t done, std::int64_t total, double value) {
                progress.update(fmt::format("window {}/{}, PPL {:.4f}", done, total, value));
            };
            const PerplexityResult result = perplexity(session, tokens, options);
            progress.done();
            write_all(out.get(), format_perplexity(result));
            out.commit();
            return;
        }
        HeadStats stats(config);
        std::int64_t lines = 0;
        while (reader.next(ids)) {
            if (ids.empty()) throw Error("{}: empty line: no token to run", reader.where());
            if (std::int64_t(ids.size()) > longest)
                throw Error("{}: {} tokens exceed the {} of {} (--ctx N allows longer lines)", reader.where(), ids.size(),
                            ctx > 0 ? "--ctx" : "model's context", longest);
            if (head_stats)
                stats.add_sequence(session, ids);
            else
                for (const Frame& frame : sequence_frames(session, ids, request)) write_frame(out.get(), frame);
            if (++lines % 8 == 0) progress.update(fmt::format("{} lines", lines));
        }
        progress.done();
        if (head_stats) write_head_table(out.get(), stats.table(*model));
        out.commit();
    }, flags, [] { return Context(1).describe(); });
}
