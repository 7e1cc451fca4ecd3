// decode: generate continuations of token id lines (or of KV frames), one
// output line per prompt, each id written the moment it is chosen (man/decode.1).
#include <optional>
#include <span>

#include <CLI/CLI.hpp>
#include <fmt/format.h>

#include "cli/ids.hpp"
#include "cli/options.hpp"
#include "cli/run.hpp"
#include "decoding/decoder.hpp"
#include "decoding/writer.hpp"
#include "io/number.hpp"
#include "safetensors/read.hpp"
#include "tensor/error.hpp"
#include "tensor/quote.hpp"

using namespace heads;
using namespace heads::decoding;

int main(int argc, char** argv) {
    CLI::App app{"Generate tokens: greedy, sampling, beam, contrastive, speculative, head-aware", "decode"};
    DecodeOptions o;
    auto& s = o.sampling;
    std::string model_dir, output, kv, precision = "auto", kv_type = "auto", draft, contrast_heads;
    std::vector<std::string> inputs, stops, biases, logprobs;
    int threads = 0;
    bool text = false, verbose = false;
    std::string lookup_ngram, lookahead;

    // One option per line: name, variable, value name, help, help group.
    std::string group;
    const auto option = [&](const char* name, auto& value, const char* type, const char* help) {
        return cli::add_number(app, name, value, help)->type_name(type)->group(group.empty() ? "Options" : group);
    };
    cli::add_model_option(app, model_dir);
    cli::add_threads_option(app, threads);
    cli::add_output_option(app, output);
    option("-n,--max-tokens", o.limits.max_tokens, "N", "tokens to generate per prompt; -1: until EOS (default 128)");
    app.add_flag("--ignore-eos", o.limits.ignore_eos, "EOS is an ordinary token: written, and generation goes on");
    option("--stop", stops, "STRING", "stop after the token that completes STRING in the text (repeatable)");
    app.add_flag("--text", text, "write text instead of ids (through the model's tokenizer)");
    option("--logprobs", logprobs, "K FILE", "write each token's log-probability and the K best to FILE (TSV)")
        ->expected(2);
    option("--kv", kv, "FILE", "continue KV frames from FILE ('-': stdin) instead of reading id lines");
    cli::at_least(option("--keep", o.keep, "N", "at the context length, keep the first N positions and drop half the rest"), 0);
    option("--kv-policy", o.kv_policy, "SPEC", "KV cache policy at every step: full, window:SINK:RECENT, NAME:budget=B:... (compress-kv(1))");
    option("--mask-heads", o.mask_heads, "HEADS", "generate with these heads ablated: L.H,... or @FILE");
    app.add_flag("-v,--verbose", verbose, "the strategy and its statistics on stderr");
    cli::add_precision_option(app, precision);
    cli::add_kv_type_option(app, kv_type);
    option("files", inputs, "FILE", "id lines (default: stdin)");

    group = "Sampling (in this order)";
    option("--logit-bias", biases, "ID=BIAS", "added to a token's logit; ID=-inf bans it (repeatable)");
    option("--repeat-penalty", s.repeat_penalty, "R", "CTRL repetition penalty (1: off)");
    option("--presence-penalty", s.presence_penalty, "P", "subtracted once from present tokens");
    option("--frequency-penalty", s.frequency_penalty, "F", "subtracted per occurrence");
    option("--repeat-last-n", s.penalty_last_n, "N", "tokens the penalties look at (-1: all; default 64)");
    option("--no-repeat-ngram", s.no_repeat_ngram, "N", "never repeat an n-gram of this size");
    option("--temp", s.temperature, "T", "temperature; 0 (the default) is greedy");
    option("--top-k", s.top_k, "K", "keep the K most likely (0: off); contrastive search's candidates");
    option("--top-p", s.top_p, "P", "nucleus: keep the smallest set of mass P (1: off)");
    option("--min-p", s.min_p, "P", "keep tokens at least P times as likely as the best (0: off)");
    option("--typical-p", s.typical_p, "P", "locally typical sampling with mass P (1: off)");
    option("--seed", o.seed, "S", "random seed (default 0); sequence n uses (seed, n)");

    group = "Strategies (one at a time)";
    cli::at_least(option("--beams", o.beam.beams, "N", "beam search with N beams"), 1);
    option("--length-penalty", o.beam.length_penalty, "P", "beam score = logprob / length^P (default 1)");
    app.add_flag("--early-stopping", o.beam.early_stopping, "stop when N hypotheses are finished")->group(group);
    option("--n-best", o.beam.n_best, "K", "write the K best beams, one line each");
    option("--penalty-alpha", o.penalty_alpha, "A", "contrastive search with degeneration penalty A (and --top-k)");
    option("--draft", draft, "DIR", "speculative decoding with this draft model (same tokenizer)");
    option("--draft-max", o.draft_max, "K", "draft tokens per step (default 8)");
    option("--draft-p-min", o.draft_p_min, "P", "stop drafting below this top probability (default 0)");
    option("--prompt-lookup", o.prompt_lookup, "N", "speculative decoding drafting N tokens from the context");
    option("--lookup-ngram", lookup_ngram, "MIN,MAX", "n-gram sizes prompt lookup matches (default 1,3)");
    option("--lookahead", lookahead, "W,N,G", "lookahead decoding: window W, n-gram size N, candidates G");
    option("--contrast-heads", contrast_heads, "FILE", "DeCoRe: contrast with the top heads of FILE masked");
    option("--by", o.contrast_by, "COLUMN", "the head table's score column (default retrieval)");
    option("--top", o.contrast_top, "K", "how many of its top heads to mask (default 8)");
    option("--alpha", o.contrast.alpha, "A", "contrast at maximal entropy (default 1)");
    option("--contrast-cutoff", o.contrast.cutoff, "B", "drop tokens below B times the best probability (0: off)");

    // How decode spells the library's parameters, for its messages (heads::Param).
    const cli::FlagNames flags{
        {"temperature", "--temp"}, {"top_k", "--top-k"}, {"top_p", "--top-p"}, {"min_p", "--min-p"},
        {"typical_p", "--typical-p"}, {"repeat_penalty", "--repeat-penalty"},
        {"presence_and_frequency_penalty", "--presence-penalty/--frequency-penalty"},
        {"penalty_last_n", "--repeat-last-n"}, {"no_repeat_ngram", "--no-repeat-ngram"}, {"logit_bias", "--logit-bias"},
        {"keep", "--keep"}, {"kv_policy", "--kv-policy"}, {"context_shift", "--keep/--kv-policy"},
        {"draft", "--draft"}, {"lookahead", "--lookahead"},
        {"strategy", "--beams/--penalty-alpha/--draft/--prompt-lookup/--lookahead/--contrast-heads"},
        {"contrast_top", "--top"}, {"penalty_alpha", "--penalty-alpha"}, {"draft_max", "--draft-max"},
        {"draft_p_min", "--draft-p-min"}, {"prompt_lookup", "--prompt-lookup"}, {"lookup_ngram", "--lookup-ngram"},
        {"stop", "--stop"}, {"text_or_stop", "--text/--stop"}, {"beams", "--beams"}, {"n_best", "--n-best"}};
    return cli::run(app, argc, argv, [&] {
        if (!kv.empty() && !inputs.empty()) throw UsageError("give id files or --kv, not both");
        if (o.limits.max_tokens < -1)
            throw UsageError("--max-tokens must be -1 (no limit) or more, not {}", o.limits.max_tokens);
        if (!lookup_ngram.empty()) {
            const auto sizes = cli::parse_counts(lookup_ngram, 2, "--lookup-ngram");
            o.lookup_ngram_min = sizes[0], o.lookup_ngram_max = sizes[1];
        }
        if (!lookahead.empty()) o.lookahead = cli::parse_counts(lookahead, 3, "--lookahead");
        for (const auto& bias : biases) s.logit_bias.push_back(sampling::parse_logit_bias(bias));
        o.precision = precision_named(precision);
        o.kv_type = slot_type_from_name(kv_type);
        o.draft = draft;
        o.contrast_heads = contrast_heads;
        int logprobs_k = 0;
        if (!logprobs.empty()) {
            const auto k = parse_count<int>(logprobs[0]);
            if (!k) throw UsageError("--logprobs K FILE: bad K {}", quote(logprobs[0]));
            logprobs_k = *k;
        }

        // The user's spec alone first: a bad one is bad usage (a frame's own is checked as input).
        if (app.count("--kv-policy") > 0) {
            try {
                make_kv_policy(o.kv_policy);
            } catch (const Error& error) {
                throw UsageError(Param{"kv_policy"}, "{}", error.what());
            }
        }
        // KV frames come with the policy that made them, which goes on acting.
        std::optional<FrameReader> frames;
        std::optional<Frame> pending_frame;
        const auto frame_where = [&] { return fmt::format("{}: frame {}", kv == "-" ? "<stdin>" : kv, frames->count()); };
        if (!kv.empty()) {
            frames.emplace(kv);
            pending_frame = frames->next();
            if (pending_frame && app.count("--kv-policy") == 0) o.kv_policy = kv_frame_policy(*pending_frame, frame_where());
        }

        Context context(cli::thread_count(threads));
        Decoder decoder(context, cli::find_model(model_dir), o);
        std::optional<Tokenizer> tokenizer;
        if (text || !stops.empty()) tokenizer.emplace(decoder.model().dir());
        cli::Output out(output);
        std::optional<cli::Output> logprobs_out;
        std::optional<LogprobsWriter> logprobs_writer;
        if (!logprobs.empty()) {
            logprobs_out.emplace(logprobs[1]);
            logprobs_writer.emplace(logprobs_out->get(), logprobs_k);
        }
        TokenWriter writer(out.get(), tokenizer ? &*tokenizer : nullptr, text, stops,
                           logprobs_writer ? &*logprobs_writer : nullptr);
        if (verbose) fmt::print(stderr, "decode: {}\n", decoder.describe());

        // One prompt; a runtime error says which input it came from (usage errors need no place).
        const auto generate = [&](const std::string& where, std::span<const std::int32_t> prompt,
                                  const KvFrameContents* frame) {
            try {
                decoder.generate(prompt, frame, writer);
            } catch (const UsageError&) {
                throw;
            } catch (const Error& error) {
                throw Error(Param{error.param()}, "{}: {}", where, error.what());
            }
        };
        if (frames) {
            for (; pending_frame; pending_frame = frames->next()) {
                const std::string where = frame_where();
                const KvFrameContents contents = kv_from_frame(*pending_frame, where);
                generate(where, contents.info.tokens, &contents);
            }
        } else {
            cli::IdReader reader(inputs, decoder.model().vocab_size());
            std::vector<std::int32_t> ids;
            while (reader.next(ids)) generate(reader.where(), ids, nullptr);
        }
        out.commit();
        if (logprobs_out) logprobs_out->commit();
        if (verbose) fmt::print(stderr, "decode: {}\n", decoder.report());
    }, flags, [] { return Context(1).describe(); });
}
