#pragma once
// Options every program spells the same way (DESIGN.md) and what they resolve to.

#include <cstdio>
#include <filesystem>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <typeinfo>
#include <vector>

#include <CLI/CLI.hpp>

#include "io/input_stream.hpp"
#include "io/output.hpp"

namespace heads::cli {

// -m, --model DIR
CLI::Option* add_model_option(CLI::App& app, std::string& model,
                              const std::string& help = "model directory (default: $HEADS_MODEL, else the "
                                                        "installed default model)");
// -t, --threads N (0, the default, means every core this process may use).
// N is capped at kMaxThreads: a stated limit, far above any core count heads
// runs on, so that -t 100000 is a usage error and not thousands of threads.
inline constexpr int kMaxThreads = 1024;
CLI::Option* add_threads_option(CLI::App& app, int& threads);
// -o, --output FILE ("-" is stdout)
CLI::Option* add_output_option(CLI::App& app, std::string& output);
// --precision auto|f32|bf16, the weights' arithmetic (precision_named in
// model/model.hpp turns the name into a Precision).
CLI::Option* add_precision_option(CLI::App& app, std::string& precision);
// --kv-type auto|f32|bf16|q8|q4, how the KV cache stores keys and values
// (slot_type_from_name in attention/slot_type.hpp turns a type's name into a
// SlotType; auto is none, the model's default_kv_type).
CLI::Option* add_kv_type_option(CLI::App& app, std::string& kv_type);

// The checks a number given as an option needs, whatever it means: a
// floating-point value must be finite and within its type (nan, inf and
// 1e39 for a float are bad usage, not a silent "0 0 0" or inf), an integer
// must fit (2^64 and -2^63-1 are refused, not saturated). Returns `option`;
// CLI11's own conversion refuses the rest.
CLI::Option* check_number(CLI::Option* option, const std::type_info& type);
template <class T> CLI::Option* add_number(CLI::App& app, const std::string& name, T& value, const std::string& help) {
    return check_number(app.add_option(name, value, help), typeid(T));
}
// "5,4,5" (decode --lookahead W,N,G, --lookup-ngram MIN,MAX): exactly n
// counts that fit an int, or heads::UsageError "OPTION: ...".
std::vector<int> parse_counts(std::string_view text, std::size_t n, std::string_view option);
// An option whose value, when given, must be at least `least` (its default
// may lie below: -1 for "off"); "--beams: must be at least 1, not 0".
CLI::Option* at_least(CLI::Option* option, std::int64_t least);

// Where the default model is installed: <dir of the executable>/../share/heads/models/kjv.
std::filesystem::path default_model_path();
// The model to use: `option` (-m), else $HEADS_MODEL, else the default model.
// Throws heads::Error when the chosen path does not exist, saying which
// source chose it.
std::filesystem::path find_model(const std::string& option);
// The thread count to use for -t `option`.
int thread_count(int option);

// The FILE arguments to read: as given, or "-" (stdin) when there are none.
std::vector<std::string> input_paths(std::vector<std::string> paths);

// Lines from FILE arguments in order ("-" or no argument is stdin).
class LineReader {
public:
    explicit LineReader(std::vector<std::string> paths);
    // The next line without its '\n'; false after the last line of the last file.
    bool next(std::string_view& line);
    // Whether next() can return a line of the current file without blocking.
    bool line_ready() const { return input_ && input_->has_line(); }
    // "FILE:LINE" of the line returned last, for messages.
    std::string where() const;

private:
    std::vector<std::string> paths_;
    std::size_t next_path_ = 0;
    std::unique_ptr<InputStream> input_;
};

// Output to a file given with -o (appears atomically at commit()), or stdout.
class Output {
public:
    explicit Output(const std::string& path);  // "" or "-" is stdout
    // The stream, named for write errors by the path as given or "standard output".
    Sink get() const { return file_ ? file_->get() : Sink(stdout); }
    // Puts the file in place; does nothing for stdout (the edge checks it).
    void commit();

private:
    std::optional<AtomicFile> file_;
};

}  // namespace heads::cli
