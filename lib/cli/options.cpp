#include "cli/options.hpp"

#include <charconv>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <limits>
#include <string>
#include <type_traits>

#include <sched.h>

#include "io/number.hpp"
#include "tensor/error.hpp"
#include "tensor/quote.hpp"

namespace heads::cli {

CLI::Option* add_model_option(CLI::App& app, std::string& model, const std::string& help) {
    return app.add_option("-m,--model", model, help)->type_name("DIR");
}

CLI::Option* add_threads_option(CLI::App& app, int& threads) {
    const CLI::Validator count(
        [](std::string& text) -> std::string {
            const auto value = parse_count<int>(text);
            if (!value) return fmt::format("not a number of threads: {}", quote(text));
            if (*value > kMaxThreads) return fmt::format("{} is more than the {} threads heads can use", *value, kMaxThreads);
            return {};
        },
        "N");
    return app.add_option("-t,--threads", threads, fmt::format("threads, at most {} (default: all cores)", kMaxThreads))
        ->type_name("N")
        ->check(count);
}

CLI::Option* add_output_option(CLI::App& app, std::string& output) {
    return app.add_option("-o,--output", output, "output file (default: stdout)")->type_name("FILE");
}

CLI::Option* add_precision_option(CLI::App& app, std::string& precision) {
    return app.add_option("--precision", precision, "weight arithmetic: auto (bf16 for bf16 weights), f32, bf16")
        ->type_name("P")
        ->check(CLI::IsMember({"auto", "f32", "bf16"}));
}

CLI::Option* add_kv_type_option(CLI::App& app, std::string& kv_type) {
    return app.add_option("--kv-type", kv_type, "how the KV cache stores keys and values: auto (bf16 where the CPU computes in bf16 for bf16 weights, else f32), f32, bf16, q8, q4")
        ->type_name("T")
        ->check(CLI::IsMember({"auto", "f32", "bf16", "q8", "q4"}));
}

namespace {

// An integer option: decimal digits (a sign for a signed type) within T,
// handed on to CLI11 as plain decimal (a transform: it rewrites the text
// before CLI11 converts it, and runs before any check). CLI11 alone clamps an int64 beyond
// its range (-9223372036854775809 became INT64_MIN) and reads "010" as octal.
template <class T> CLI::Validator integer_fitting() {
    return CLI::Validator(
        [](std::string& text) -> std::string {
            std::string_view body = text;
            if (std::is_signed_v<T> && body.starts_with('+')) body.remove_prefix(1);
            const std::size_t sign = std::is_signed_v<T> && !text.starts_with('+') && body.starts_with('-') ? 1 : 0;
            T value{};
            if (body.size() > sign && body.find_first_not_of("0123456789", sign) == std::string_view::npos) {
                const auto [end, error] = std::from_chars(body.data(), body.data() + body.size(), value);
                if (error == std::errc() && end == body.data() + body.size()) {
                    text = fmt::format("{}", value);
                    return {};
                }
            }
            return fmt::format("not a number from {} to {}: {}", std::numeric_limits<T>::min(),
                               std::numeric_limits<T>::max(), quote(text));
        },
        "");
}

// A floating-point option: finite, and within T (1e39 is no float: it became inf).
template <class T> CLI::Validator finite_fitting() {
    return CLI::Validator(
        [](std::string& text) -> std::string {
            char* end = nullptr;
            const double value = std::strtod(text.c_str(), &end);
            if (text.empty() || *end != '\0') return {};  // not a number: CLI11 says so
            if (!std::isfinite(value)) return fmt::format("must be a finite number, not {}", quote(text));
            if (std::abs(value) > double(std::numeric_limits<T>::max()))
                return fmt::format("must be a finite number of magnitude at most {:g}, not {}",
                                   std::numeric_limits<T>::max(), quote(text));
            return {};
        },
        "");
}

}  // namespace

CLI::Option* check_number(CLI::Option* option, const std::type_info& type) {
    if (type == typeid(float)) return option->check(finite_fitting<float>());
    if (type == typeid(double)) return option->check(finite_fitting<double>());
    if (type == typeid(std::uint64_t)) return option->transform(integer_fitting<std::uint64_t>());
    if (type == typeid(std::uint32_t)) return option->transform(integer_fitting<std::uint32_t>());
    if (type == typeid(std::int64_t)) return option->transform(integer_fitting<std::int64_t>());
    if (type == typeid(std::int32_t)) return option->transform(integer_fitting<std::int32_t>());
    return option;
}

std::vector<int> parse_counts(std::string_view text, std::size_t n, std::string_view option) {
    std::vector<int> out;
    std::size_t start = 0;
    while (start <= text.size() && out.size() <= n) {
        const std::size_t comma = std::min(text.find(',', start), text.size());
        const std::string_view item = text.substr(start, comma - start);
        const auto value = parse_count<int>(item);
        if (!value) throw UsageError("{}: bad number {} in {}", option, quote(item), quote(text));
        out.push_back(*value);
        start = comma + 1;
    }
    if (out.size() != n) throw UsageError("{}: {} numbers expected, not {}", option, n, quote(text));
    return out;
}

CLI::Option* at_least(CLI::Option* option, std::int64_t least) {
    return option->check(CLI::Validator(
        [least](std::string& text) -> std::string {
            std::int64_t value = 0;
            const auto [end, error] = std::from_chars(text.data(), text.data() + text.size(), value);
            if (error != std::errc() || end != text.data() + text.size()) return {};  // not a number: CLI11 says so
            if (value < least) return fmt::format("must be at least {}, not {}", least, value);
            return {};
        },
        ""));
}

std::filesystem::path default_model_path() {
    std::error_code error;
    const auto exe = std::filesystem::read_symlink("/proc/self/exe", error);
    if (error) return {};
    return (exe.parent_path() / ".." / "share" / "heads" / "models" / "kjv").lexically_normal();
}

std::filesystem::path find_model(const std::string& option) {
    if (!option.empty()) {
        if (!std::filesystem::exists(option)) throw Error("{}: no such model", option);
        return option;
    }
    if (const char* env = std::getenv("HEADS_MODEL"); env && *env) {
        if (!std::filesystem::exists(env)) throw Error("{}: no such model (from $HEADS_MODEL)", env);
        return env;
    }
    const auto fallback = default_model_path();
    if (fallback.empty() || !std::filesystem::exists(fallback))
        throw Error("no model: give -m DIR or set HEADS_MODEL (the default model {} is not installed)",
                    fallback.string());
    return fallback;
}

int thread_count(int option) {
    if (option > 0) return option;
    cpu_set_t set;
    CPU_ZERO(&set);
    if (::sched_getaffinity(0, sizeof set, &set) == 0 && CPU_COUNT(&set) > 0) return CPU_COUNT(&set);
    return 1;
}

std::vector<std::string> input_paths(std::vector<std::string> paths) {
    if (paths.empty()) paths.push_back("-");
    return paths;
}

LineReader::LineReader(std::vector<std::string> paths) : paths_(input_paths(std::move(paths))) {}

bool LineReader::next(std::string_view& line) {
    for (;;) {
        if (!input_) {
            if (next_path_ == paths_.size()) return false;
            input_ = std::make_unique<InputStream>(paths_[next_path_++]);
        }
        if (input_->next_line(line)) return true;
        if (next_path_ == paths_.size()) return false;  // keep the last input for where()
        input_.reset();
    }
}

std::string LineReader::where() const {
    return input_ ? fmt::format("{}:{}", input_->name(), input_->line_number()) : std::string();
}

Output::Output(const std::string& path) {
    if (!path.empty() && path != "-") file_.emplace(path);
}

void Output::commit() {
    if (file_) file_->commit();
}

}  // namespace heads::cli
