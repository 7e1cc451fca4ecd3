// prune-heads: writes a new model directory without some attention heads,
// chosen by an explicit list or by a head table's score column (--mask-only
// keeps the shapes and zeroes the heads instead). man/prune-heads.1.
#include <CLI/CLI.hpp>
#include <fmt/format.h>

#include "cli/options.hpp"
#include "cli/run.hpp"
#include "heads/prune.hpp"
#include "model/weights.hpp"
#include "model/writer.hpp"
#include "tensor/error.hpp"

using namespace heads;

namespace {

struct Options {
    std::string model_dir, output, list, scores, by, keep;
    std::int64_t drop = 0, min_per_layer = 0;
    bool dropping = false, reverse = false, mask_only = false, force = false;
};

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

}  // namespace

int main(int argc, char** argv) {
    CLI::App app{"Remove attention heads from a model: write a new model directory without them", "prune-heads"};
    Options o;
    cli::add_model_option(app, o.model_dir);
    cli::add_output_option(app, o.output)->description("the new model directory");
    app.add_option("--heads", o.list, "remove these heads: L.H,... or @FILE (H: index in the layer, as --mask-heads)");
    app.add_option("--scores", o.scores, "head table (TSV) to rank the heads by");
    app.add_option("--by", o.by, "--scores: the score column; the lowest scores go first");
    app.add_option("--keep", o.keep, "--scores: keep this share (P%) or number of heads");
    auto* drop = app.add_option("--drop", o.drop, "--scores: remove this many heads");
    app.add_option("--min-per-layer", o.min_per_layer, "--scores: leave no layer with fewer heads than this");
    app.add_flag("--reverse", o.reverse, "--scores: remove the highest scores first");
    app.add_flag("--mask-only", o.mask_only, "keep every shape; zero the removed heads' o_proj columns instead");
    app.add_flag("--force", o.force, "replace the output directory if it exists");

    const cli::FlagNames flags{{"keep", "--keep"}, {"min_per_layer", "--min-per-layer"}};
    return cli::run(app, argc, argv, [&] {
        o.dropping = drop->count() > 0;
        const bool ranked = !o.scores.empty(), ranking = !o.by.empty() || !o.keep.empty() || o.dropping ||
                                                          o.min_per_layer || o.reverse;
        if (o.drop < 0 || o.min_per_layer < 0) throw UsageError("--drop and --min-per-layer must not be negative");
        if (ranked == !o.list.empty()) throw UsageError("give the heads to remove: --heads LIST or --scores FILE");
        if (!ranked && ranking) throw UsageError("--by, --keep, --drop, --min-per-layer and --reverse go with --scores");
        if (ranked && o.by.empty()) throw UsageError("--scores needs --by COLUMN");
        if (ranked && o.keep.empty() == !o.dropping) throw UsageError("--scores needs one of --keep P% and --drop K");
        if (o.output.empty() || o.output == "-") throw UsageError("removing heads needs -o DIR, the new model directory");
        prune(o);
    }, flags);
}
