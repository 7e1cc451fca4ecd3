// infer: one forward pass per id line; writes logits, hidden states,
// attention and the KV cache as safetensors frames (man/infer.1).
#include <CLI/CLI.hpp>

#include "cli/ids.hpp"
#include "cli/options.hpp"
#include "cli/run.hpp"
#include "eval/frames.hpp"
#include "model/model.hpp"
#include "model/session.hpp"
#include "safetensors/write.hpp"
#include "tensor/error.hpp"

using namespace heads;

int main(int argc, char** argv) {
    CLI::App app{"Run a model over token id lines: logits, hidden states, attention, KV cache", "infer"};
    std::string model_dir, output;
    int threads = 0;
    std::vector<std::string> inputs;
    std::string logits = "last", precision = "auto";
    std::vector<std::int64_t> hidden, attention;
    bool kv = false;
    std::int64_t ctx = 0;
    cli::add_model_option(app, model_dir);
    cli::add_threads_option(app, threads);
    cli::add_output_option(app, output);
    app.add_option("--logits", logits, "logits of the last position, of all positions, or none")
        ->check(CLI::IsMember({"last", "all", "none"}));
    app.add_option("--hidden", hidden, "hidden states after layers L,...")
        ->delimiter(',');
    app.add_option("--attention", attention, "attention probabilities of layers L,...")->delimiter(',');
    app.add_flag("--kv", kv, "the KV cache, with the attention each slot received");
    app.add_option("--ctx", ctx, "longest sequence allowed (default: the model's context length)");
    app.add_option("--precision", precision, "weight arithmetic: auto (bf16 for bf16 weights), f32, bf16")
        ->check(CLI::IsMember({"auto", "f32", "bf16"}));
    app.add_option("files", inputs, "id lines (default: stdin)");

    return cli::run(app, argc, argv, [&] {
        Context context(cli::thread_count(threads));
        LoadOptions load;
        load.precision = precision == "f32" ? Precision::f32 : precision == "bf16" ? Precision::bf16 : Precision::automatic;
        const auto model = Model::load(context, cli::find_model(model_dir), load);
        FrameRequest request;
        request.logits = logits == "all" ? LogitRows::all : logits == "none" ? LogitRows::none : LogitRows::last;
        request.hidden_layers = hidden;
        request.attention_layers = attention;
        request.kv = kv;
        check_frame_request(request, model->config());
        const std::int64_t longest = ctx > 0 ? ctx : model->context_length();
        Session session(model, context, {std::min<std::int64_t>(longest, 4096)});

        cli::Output out(output);
        cli::IdReader reader(inputs, model->vocab_size());
        std::vector<std::int32_t> ids;
        while (reader.next(ids)) {
            if (ids.empty()) throw Error("{}: empty line: no token to run", reader.where());
            if (std::int64_t(ids.size()) > longest)
                throw Error("{}: {} tokens exceed the {} context of {} (--ctx N allows longer)", reader.where(),
                            ids.size(), ctx > 0 ? "--ctx" : "model's", longest);
            for (const Frame& frame : sequence_frames(session, ids, request)) write_frame(out.get(), frame);
        }
        out.commit();
    });
}
