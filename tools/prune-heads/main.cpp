// prune-heads: scores every head into a head table (--score), or writes a
// new model directory without some attention heads, chosen by an explicit
// list or by a head table's score column (--mask-only keeps the shapes and
// zeroes the heads instead), or turns multi-head attention into grouped-query
// attention (--to-gqa, in contiguous groups or by similarity). man/prune-heads.1.
#include <CLI/CLI.hpp>
#include <fmt/format.h>

#include "cli/ids.hpp"
#include "cli/options.hpp"
#include "cli/progress.hpp"
#include "cli/run.hpp"
#include "heads/ablation.hpp"
#include "heads/kv_grouping.hpp"
#include "heads/prune.hpp"
#include "model/session.hpp"
#include "model/weights.hpp"
#include "model/writer.hpp"
#include "tensor/error.hpp"

using namespace heads;

namespace {

struct Options {
    std::string model_dir, output, list, scores, by, keep, precision = "auto", group_by = "contiguous";
    std::int64_t drop = 0, min_per_layer = 0, ctx = 0, to_gqa = 0;
    std::uint64_t seed = 0;
    bool dropping = false, reverse = false, mask_only = false, force = false;
    int threads = 0;
    std::vector<std::string> inputs;
};

// The calibration tokens: all input lines, one after another.
std::vector<std::int32_t> calibration_tokens(const Options& o, const Model& model) {
    cli::IdReader reader(o.inputs, model.vocab_size());
    std::vector<std::int32_t> tokens, ids;
    while (reader.next(ids)) tokens.insert(tokens.end(), ids.begin(), ids.end());
    if (tokens.empty()) throw Error("no calibration tokens: the input is empty");
    return tokens;
}

std::shared_ptr<const Model> load_model(const Options& o, Context& context, const std::filesystem::path& dir) {
    LoadOptions load;
    load.precision = precision_named(o.precision);
    return Model::load(context, dir, load);
}

// --score: the head table of the calibration tokens.
void score(const Options& o) {
    Context context(cli::thread_count(o.threads));
    const auto model = load_model(o, context, cli::find_model(o.model_dir));
    const std::vector<std::int32_t> tokens = calibration_tokens(o, *model);
    const std::int64_t window = o.ctx > 0 ? o.ctx : model->context_length();
    Session session(model, context, {.capacity = std::min<std::int64_t>(window, 4096)});
    cli::Output out(o.output);
    cli::Progress progress("prune-heads");
    AblationOptions options{o.ctx, [&](std::int64_t done, std::int64_t total) {
                                if (done % 8 == 0 || done == total) progress.update(fmt::format("head {}/{}", done, total));
                            }};
    RetrievalOptions retrieval;
    retrieval.seed = o.seed;
    const HeadTable table = score_heads(session, tokens, options, retrieval);
    progress.done();
    write_head_table(out.get(), table);
    out.commit();
}

// The heads to remove and how they were chosen, for the record.
std::pair<HeadMask, std::string> selection(const Options& o, const std::filesystem::path& source,
                                           const LlamaConfig& config) {
    if (o.scores.empty()) return {head_mask(config, parse_head_list(o.list)), "--heads " + o.list};
    std::int64_t total = 0;
    for (const auto& layer : config.layers) total += layer.n_heads();
    if (o.drop > total) throw Error("--drop {}: the model has {} heads", o.drop, total);
    const HeadTable table = read_head_table(o.scores, model_fingerprint(source));
    const std::int64_t remove = o.dropping ? o.drop : total - heads_to_keep(o.keep, total);
    const HeadMask removed = heads_to_remove(config, table, {o.by, remove, o.min_per_layer, o.reverse});
    std::string how = fmt::format("--by {} {}", o.by, o.dropping ? fmt::format("--drop {}", o.drop) : "--keep " + o.keep);
    if (o.min_per_layer) how += fmt::format(" --min-per-layer {}", o.min_per_layer);
    if (o.reverse) how += " --reverse";
    return {removed, how};
}

void prune(const Options& o) {
    const auto source = cli::find_model(o.model_dir);
    if (std::filesystem::exists(o.output) && !o.force) throw Error("{}: already exists (--force replaces it)", o.output);
    const LlamaConfig config = read_config(source);
    const auto [removed, how] = selection(o, source, config);
    write_edited_model(source, o.output, {layout_without(config, removed), o.mask_only, how, o.force});
}

// --to-gqa: every query head kept, each layer's KV heads mean-pooled into o.to_gqa,
// in contiguous groups or in groups of similar heads on the calibration tokens.
void to_gqa(const Options& o) {
    const auto source = cli::find_model(o.model_dir);
    if (std::filesystem::exists(o.output) && !o.force) throw Error("{}: already exists (--force replaces it)", o.output);
    HeadEdit edit;
    edit.kv_heads = o.to_gqa;
    edit.selection = fmt::format("--to-gqa {}", o.to_gqa);
    edit.replace = o.force;
    edit.group_by = o.group_by;
    if (o.group_by == "similarity") {
        check_pooling(read_config(source), o.to_gqa);  // before the calibration run
        Context context(cli::thread_count(o.threads));
        const auto model = load_model(o, context, source);
        const std::vector<std::int32_t> tokens = calibration_tokens(o, *model);
        const std::int64_t window = o.ctx > 0 ? o.ctx : model->context_length();
        Session session(model, context, {std::min<std::int64_t>(window, 4096)});
        edit.kv_groups = similar_kv_groups(session, tokens, o.to_gqa, o.ctx);
        edit.selection += " --group-by similarity";
    }
    write_edited_model(source, o.output, edit);
}

}  // namespace

int main(int argc, char** argv) {
    CLI::App app{"Score attention heads, or remove them: write a new model directory without them", "prune-heads"};
    Options o;
    bool scoring = false;
    cli::add_model_option(app, o.model_dir);
    cli::add_output_option(app, o.output)->description("the new model directory (--score: the head table; default stdout)");
    app.add_flag("--score", scoring, "write the head table of the calibration id lines: ablation, retrieval, statistics");
    app.add_option("--ctx", o.ctx, "--score: window (default: the model's context), as infer --ppl");
    auto* seed = app.add_option("--seed", o.seed, "--score: seed of the retrieval score's copy prompts (default 0)");
    cli::add_threads_option(app, o.threads);
    cli::add_precision_option(app, o.precision);
    app.add_option("--heads", o.list, "remove these heads: L.H,... or @FILE (H: index in the layer, as --mask-heads)");
    app.add_option("--scores", o.scores, "head table (TSV) to rank the heads by");
    app.add_option("--by", o.by, "--scores: the score column; the lowest scores go first");
    app.add_option("--keep", o.keep, "--scores: keep this share (P%) or number of heads");
    auto* drop = app.add_option("--drop", o.drop, "--scores: remove this many heads");
    app.add_option("--min-per-layer", o.min_per_layer, "--scores: leave no layer with fewer heads than this");
    app.add_flag("--reverse", o.reverse, "--scores: remove the highest scores first");
    auto* gqa = app.add_option("--to-gqa", o.to_gqa, "keep every head; mean-pool each layer's KV heads into G groups");
    auto* group_by = app.add_option("--group-by", o.group_by, "--to-gqa: contiguous groups, or groups of similar "
                                                              "keys and values on calibration id lines")
                         ->check(CLI::IsMember({"contiguous", "similarity"}));
    app.add_flag("--mask-only", o.mask_only, "keep every shape; zero the removed heads' o_proj columns instead");
    app.add_flag("--force", o.force, "replace the output directory if it exists");
    app.add_option("files", o.inputs, "--score, --group-by similarity: calibration id lines (default: stdin)");

    const cli::FlagNames flags{{"keep", "--keep"}, {"min_per_layer", "--min-per-layer"}, {"ctx", "--ctx"}};
    return cli::run(app, argc, argv, [&] {
        o.dropping = drop->count() > 0;
        const bool ranked = !o.scores.empty(), ranking = !o.by.empty() || !o.keep.empty() || o.dropping ||
                                                          o.min_per_layer || o.reverse;
        if (o.drop < 0 || o.min_per_layer < 0 || o.ctx < 0)
            throw UsageError("--drop, --min-per-layer and --ctx must not be negative");
        if (scoring) {
            if (ranked || !o.list.empty() || ranking || o.mask_only || o.force || gqa->count())
                throw UsageError("--score writes a head table and removes no heads");
            return score(o);
        }
        if (group_by->count() && !gqa->count()) throw UsageError("--group-by goes with --to-gqa");
        if (gqa->count()) {
            if (o.to_gqa < 1) throw UsageError("--to-gqa: G must be at least 1, not {}", o.to_gqa);
            if (ranked || !o.list.empty() || ranking || o.mask_only || seed->count())
                throw UsageError("--to-gqa removes no heads: it goes with -m, -o, --force and --group-by only");
            if (o.group_by != "similarity" && (!o.inputs.empty() || o.ctx))
                throw UsageError("input files and --ctx go with --group-by similarity (or --score)");
            if (o.output.empty() || o.output == "-") throw UsageError("--to-gqa needs -o DIR, the new model directory");
            return to_gqa(o);
        }
        if (!o.inputs.empty() || o.ctx || seed->count())
            throw UsageError("input files, --ctx and --seed go with --score");
        if (ranked == !o.list.empty()) throw UsageError("give the heads to remove: --heads LIST or --scores FILE");
        if (!ranked && ranking) throw UsageError("--by, --keep, --drop, --min-per-layer and --reverse go with --scores");
        if (ranked && o.by.empty()) throw UsageError("--scores needs --by COLUMN");
        if (ranked && o.keep.empty() == !o.dropping) throw UsageError("--scores needs one of --keep P% and --drop K");
        if (o.output.empty() || o.output == "-") throw UsageError("removing heads needs -o DIR, the new model directory");
        prune(o);
    }, flags, [] { return Context(1).describe(); });
}
