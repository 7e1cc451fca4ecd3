// tokenize: text lines to token id lines, and back with -d, streaming.
// See man/tokenize.1.

#include <string>
#include <vector>

#include "io/id_line.hpp"
#include "cli/options.hpp"
#include "cli/run.hpp"
#include "io/input_stream.hpp"
#include "io/output.hpp"
#include "tensor/error.hpp"
#include "tokenizer/stream_decoder.hpp"
#include "tokenizer/tokenizer.hpp"

namespace {

struct Options {
    std::string model;
    std::vector<std::string> files;
    std::string output;
    bool decode = false;
    bool bos = true;
    bool eos = false;
    bool pieces = false;
    bool whole = false;
    int threads = 0;
};

// BOS, the ids, EOS, as one id line.
void append_sequence(std::string& out, const heads::Tokenizer& tokenizer, const Options& options,
                     const std::vector<int>& ids) {
    const int bos = tokenizer.bos_id(), eos = tokenizer.eos_id();
    const bool with_bos = options.bos && bos >= 0, with_eos = options.eos && eos >= 0;
    if (with_bos) heads::append_ids(out, {&bos, 1});
    if (with_bos && !ids.empty()) out += ' ';
    heads::append_ids(out, ids);
    if (with_eos && (with_bos || !ids.empty())) out += ' ';
    if (with_eos) heads::append_ids(out, {&eos, 1});
    out += '\n';
}

void append_pieces(std::string& out, const heads::Tokenizer& tokenizer, const Options& options,
                   std::vector<std::string>& pieces) {
    if (options.bos && tokenizer.bos_id() >= 0) pieces.insert(pieces.begin(), tokenizer.piece(tokenizer.bos_id()));
    if (options.eos && tokenizer.eos_id() >= 0) pieces.push_back(tokenizer.piece(tokenizer.eos_id()));
    for (std::size_t i = 0; i < pieces.size(); ++i) {
        if (i > 0) out += ' ';
        out += pieces[i];
    }
    out += '\n';
}

// Lines in batches of what is already buffered (so a pipe still streams
// line by line), encoded on every thread, written in order.
void encode_lines(const heads::Tokenizer& tokenizer, const Options& options, const heads::Sink& out) {
    constexpr std::size_t kBatchBytes = std::size_t(4) << 20;
    const int threads = heads::cli::thread_count(options.threads);
    heads::cli::LineReader reader(options.files);
    std::string arena, text;
    std::vector<std::size_t> ends;
    std::vector<std::string_view> lines;
    std::vector<std::vector<int>> ids;
    std::vector<std::string> pieces;
    std::string_view line;
    for (bool more = true; more;) {
        arena.clear();
        ends.clear();
        while ((more = reader.next(line))) {
            arena += line;
            ends.push_back(arena.size());
            if (arena.size() >= kBatchBytes || !reader.line_ready()) break;
        }
        lines.clear();
        for (std::size_t i = 0, begin = 0; i < ends.size(); begin = ends[i++])
            lines.emplace_back(arena.data() + begin, ends[i] - begin);
        text.clear();
        if (options.pieces) {
            for (const auto piece_line : lines) {
                tokenizer.encode_pieces(piece_line, pieces);
                append_pieces(text, tokenizer, options, pieces);
            }
        } else {
            tokenizer.encode_batch(lines, ids, threads);
            for (std::size_t i = 0; i < lines.size(); ++i) append_sequence(text, tokenizer, options, ids[i]);
        }
        heads::write_all(out, text);
    }
}

// The whole input as one text, newlines kept, to one line.
void encode_whole(const heads::Tokenizer& tokenizer, const Options& options, const heads::Sink& out) {
    std::string all;
    for (const auto& file : heads::cli::input_paths(options.files)) {
        heads::InputStream input(file);
        for (auto chunk = input.next_chunk(); !chunk.empty(); chunk = input.next_chunk()) all += chunk;
    }
    std::string text;
    if (options.pieces) {
        std::vector<std::string> pieces;
        tokenizer.encode_long_pieces(all, pieces);
        append_pieces(text, tokenizer, options, pieces);
    } else {
        std::vector<int> ids;
        tokenizer.encode_long(all, ids, heads::cli::thread_count(options.threads));
        append_sequence(text, tokenizer, options, ids);
    }
    heads::write_all(out, text);
}

// Id lines to text, each piece written as soon as its characters are whole.
void decode_lines(const heads::Tokenizer& tokenizer, const Options& options, const heads::Sink& out) {
    heads::StreamDecoder decoder(tokenizer);
    std::string text;
    for (const auto& file : heads::cli::input_paths(options.files)) {
        heads::InputStream input(file);
        heads::IdStreamParser parser;
        const auto on_id = [&](int id) { decoder.push(id, text); };
        const auto on_line_end = [&] {
            decoder.finish(text);
            text += '\n';
        };
        try {
            for (auto chunk = input.next_chunk(); !chunk.empty(); chunk = input.next_chunk()) {
                parser.feed(chunk, on_id, on_line_end);
                heads::write_all(out, text);  // InputStream flushes before it waits for more
                text.clear();
            }
            if (parser.finish(on_id)) on_line_end();
        } catch (const heads::Error& error) {
            heads::write_all(out, text);
            throw heads::Error("{}:{}: {}", input.name(), parser.line(), error.what());
        }
        heads::write_all(out, text);
        text.clear();
    }
}

}  // namespace

int main(int argc, char** argv) {
    CLI::App app{"Turn text lines into token id lines (spm_encode --output_format=id), or back with -d.",
                 "tokenize"};
    Options options;
    heads::cli::add_model_option(app, options.model,
                                 "model directory or sentencepiece .model file (default: $HEADS_MODEL, "
                                 "else the installed default model)");
    app.add_flag("-d,--decode", options.decode, "id lines to text");
    app.add_flag("--bos,!--no-bos", options.bos, "start each sequence with BOS (default: on)");
    app.add_flag("--eos", options.eos, "end each sequence with EOS");
    app.add_flag("--pieces", options.pieces, "write pieces instead of ids");
    app.add_flag("--whole", options.whole, "the whole input is one text, newlines kept: one id line out");
    heads::cli::add_output_option(app, options.output);
    heads::cli::add_threads_option(app, options.threads);
    app.add_option("FILE", options.files, "input files (default: stdin; - is stdin)");

    return heads::cli::run(app, argc, argv, [&] {
        if (options.decode && (options.pieces || options.whole || options.eos))
            throw heads::UsageError("-d takes id lines: --pieces, --whole and --eos are for encoding");
        const heads::Tokenizer tokenizer(heads::cli::find_model(options.model));
        heads::cli::Output output(options.output);
        if (options.decode)
            decode_lines(tokenizer, options, output.get());
        else if (options.whole)
            encode_whole(tokenizer, options, output.get());
        else
            encode_lines(tokenizer, options, output.get());
        output.commit();
    });
}
