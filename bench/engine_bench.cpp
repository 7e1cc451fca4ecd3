// engine_bench: the engine's speed on one model, as scripts/bench reports it
// (not installed). Loads the model, then times a prefill of --prefill tokens
// from an empty cache (in forwards of at most --batch tokens) and --decode
// single-token steps after it, each repeated --reps times; prints TSV rows:
// what, tokens/s (median, min, max), seconds, peak RSS, the weight bytes a
// decode step reads.
#include <sys/resource.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <random>
#include <vector>

#include <CLI/CLI.hpp>
#include <fmt/format.h>

#include "cli/options.hpp"
#include "cli/run.hpp"
#include "model/session.hpp"

using namespace heads;
using Clock = std::chrono::steady_clock;

namespace {

double seconds_since(Clock::time_point start) { return std::chrono::duration<double>(Clock::now() - start).count(); }

double peak_rss_mib() {
    rusage usage{};
    getrusage(RUSAGE_SELF, &usage);
    return double(usage.ru_maxrss) / 1024.0;
}

struct Stats {
    double median, low, high;
};

Stats stats(std::vector<double> rates) {
    std::sort(rates.begin(), rates.end());
    return {rates[rates.size() / 2], rates.front(), rates.back()};
}

// The bytes of the weight matrices, each of which a decode step reads once
// (the embedding table only a row of, unless lm_head is tied to it).
std::size_t matrix_bytes(const Model& model) {
    std::size_t bytes = model.lm_head().nbytes();
    for (std::int64_t l = 0; l < model.config().n_layers; ++l) {
        const LayerWeights& w = model.layer(l);
        for (const PackedMatrix* m : {&w.qkv, &w.o, &w.gate_up, &w.down})
            if (!m->empty()) bytes += m->nbytes();
    }
    return bytes;
}

}  // namespace

int main(int argc, char** argv) {
    CLI::App app{"Time the engine: load, prefill, decode", "engine_bench"};
    std::string model_dir, precision = "auto", kv_type = "auto";
    int threads = 0, reps = 5;
    std::int64_t prefill = 512, decode = 64, batch = 0;
    cli::add_model_option(app, model_dir);
    cli::add_threads_option(app, threads);
    cli::add_precision_option(app, precision);
    cli::add_kv_type_option(app, kv_type);
    app.add_option("--prefill", prefill, "prompt tokens");
    app.add_option("--decode", decode, "generated tokens, one per step");
    app.add_option("--reps", reps, "repetitions (the median is reported)");
    // llama.cpp prefills in micro-batches (-ub, 512 by default): the same
    // bound on heads' side makes peak RSS at a long context comparable.
    app.add_option("--batch", batch, "prefill in forwards of at most this many tokens (default 0: all at once)")
        ->check(CLI::NonNegativeNumber);
    return cli::run(app, argc, argv, [&] {
        Context ctx(cli::thread_count(threads));
        LoadOptions options;
        options.precision = precision_named(precision);
        const auto start = Clock::now();
        const auto model = Model::load(ctx, cli::find_model(model_dir), options);
        const double load = seconds_since(start);
        const double load_rss = peak_rss_mib();
        std::mt19937 rng(1);
        std::vector<std::int32_t> prompt(static_cast<std::size_t>(prefill));
        for (auto& id : prompt) id = std::int32_t(3 + rng() % std::uint32_t(model->vocab_size() - 3));
        Session session(model, ctx, {.capacity = prefill + decode, .kv_type = slot_type_from_name(kv_type)});
        std::vector<double> prefill_rates, decode_rates;
        for (int rep = 0; rep <= reps; ++rep) {  // rep 0 warms up (primitives, pages)
            session.reset();
            ForwardRequest request;
            ForwardResult result;
            const auto step = std::size_t(batch > 0 ? batch : std::max<std::int64_t>(prefill, 1));
            auto t0 = Clock::now();
            for (std::size_t at = 0; at < prompt.size(); at += step) {
                request.tokens = std::span(prompt).subspan(at, std::min(step, prompt.size() - at));
                request.logits = at + step >= prompt.size() ? LogitRows::last : LogitRows::none;
                result = session.forward(request);
            }
            request.logits = LogitRows::last;
            const double prefill_time = seconds_since(t0);
            std::int32_t next = std::int32_t(std::max_element(result.logits.begin(), result.logits.end()) - result.logits.begin());
            t0 = Clock::now();
            for (std::int64_t i = 0; i < decode; ++i) {
                request.tokens = std::span(&next, 1);
                result = session.forward(request);
                next = std::int32_t(std::max_element(result.logits.begin(), result.logits.end()) - result.logits.begin());
            }
            const double decode_time = seconds_since(t0);
            if (rep == 0) continue;
            prefill_rates.push_back(double(prefill) / prefill_time);
            decode_rates.push_back(double(decode) / decode_time);
        }
        const Stats p = stats(prefill_rates), d = stats(decode_rates);
        fmt::print("what\ttokens_per_s\tmin\tmax\tdetail\n");
        fmt::print("load\t-\t-\t-\t{:.3f} s, RSS {:.0f} MiB, weights {}, {} threads, isa {}\n", load, load_rss,
                   format_name(model->weight_format()), ctx.threads(), ctx.isa());
        fmt::print("prefill{}\t{:.2f}\t{:.2f}\t{:.2f}\t{} reps\n", prefill, p.median, p.low, p.high, reps);
        fmt::print("decode{}\t{:.2f}\t{:.2f}\t{:.2f}\t{} reps, after the prefill\n", decode, d.median, d.low, d.high, reps);
        fmt::print("peak_rss\t-\t-\t-\t{:.0f} MiB\n", peak_rss_mib());
        fmt::print("weight_bytes\t-\t-\t-\t{} bytes read per decode step\n", matrix_bytes(*model));
        fmt::print("kv_cache\t-\t-\t-\t{} slots, {} bytes per key or value row of a head\n",
                   slot_type_name(session.cache().slot_type()), session.cache().row_bytes());
    });
}
