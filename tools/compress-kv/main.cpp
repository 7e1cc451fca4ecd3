// compress-kv: KV frames in, smaller KV frames out, through a head-level
// eviction policy applied once, as decode goes on applying it (man/compress-kv.1).
#include <optional>

#include <CLI/CLI.hpp>
#include <fmt/format.h>

#include "cli/options.hpp"
#include "cli/run.hpp"
#include "heads/kv_scores.hpp"
#include "io/output.hpp"
#include "kv/compress.hpp"
#include "model/model.hpp"
#include "model/session.hpp"
#include "safetensors/read.hpp"
#include "safetensors/write.hpp"
#include "tensor/error.hpp"

using namespace heads;

int main(int argc, char** argv) {
    CLI::App app{"Compress KV frames head by head: eviction policies with per-head budgets", "compress-kv"};
    std::string model_dir, output, policy_name, budget, scores, by, protect, report, input = "-";
    std::optional<std::int64_t> sink, recent;
    cli::add_model_option(app, model_dir);
    cli::add_output_option(app, output);
    app.add_option("--policy", policy_name, "full, window, h2o, snapkv, pyramid, adakv, headkv, razor, duo "
                                            "(or a whole spec NAME:KEY=VALUE...), +bf16, +q8 or +q4 to quantize the slots")
        ->required();
    app.add_option("--budget", budget, "slots per KV head: a share of the cache (30%) or a count (64)");
    app.add_option("--sink", sink, "first positions every head keeps (default 4)");
    app.add_option("--recent", recent, "last positions every head keeps (default 8)");
    app.add_option("--scores", scores, "head table (infer --head-stats) for headkv, razor and duo");
    app.add_option("--by", by, "the head table's score column");
    app.add_option("--protect", protect, "razor, duo: share of KV heads kept whole (default 15%, 25%)");
    app.add_option("--report", report, "also write the report as TSV to FILE");
    app.add_option("file", input, "KV frames (default: stdin)");

    return cli::run(app, argc, argv, [&] {
        // The flags are spec keys: one spelling of a policy, as heads.policy and decode --kv-policy have it.
        // A slot type (razor+q8) stays last.
        std::string spec(eviction_policy(policy_name));
        const std::string slot_type = policy_name.substr(spec.size());
        const auto key = [&](const char* name, const std::string& value) {
            if (!value.empty()) spec += fmt::format(":{}={}", name, value);
        };
        key("budget", budget);
        key("sink", sink ? std::to_string(*sink) : "");
        key("recent", recent ? std::to_string(*recent) : "");
        key("protect", protect);
        key("by", by);
        key("scores", scores);
        spec += slot_type;

        Context context(1);
        const auto model = Model::load(context, cli::find_model(model_dir), {});
        std::unique_ptr<KvPolicy> policy;
        try {
            policy = make_kv_policy(spec);  // the spec alone first: a bad one is bad usage
        } catch (const Error& error) {
            throw UsageError("--policy {}: {}", spec, error.what());
        }
        policy = make_kv_policy_for(*model, spec);

        cli::Output out(output);
        std::optional<cli::Output> report_out;
        if (!report.empty()) report_out.emplace(report);
        FrameReader frames(input);
        while (std::optional<Frame> frame = frames.next()) {
            const std::string where = fmt::format("{}: frame {}", input == "-" ? "<stdin>" : input, frames.count());
            KvFrameContents contents = kv_from_frame(*frame, where);
            check_kv_frame(*model, contents, where);
            KvCompression done;
            try {
                done = compress_kv_frame(*frame, std::move(contents), *policy, model->config().rope);
            } catch (const UsageError&) {
                throw;
            } catch (const Error& error) {
                throw Error("{}: {}", where, error.what());
            }
            write_frame(out.get(), done.frame);
            fmt::print(stderr, "compress-kv: {}: {}\n{}", where, policy->name(), format_kv_report(done.layers));
            if (report_out)
                write_all(report_out->get(), kv_report_tsv(done.layers, std::int64_t(frames.count()), frames.count() == 1));
        }
        out.commit();
        if (report_out) report_out->commit();
    });
}
