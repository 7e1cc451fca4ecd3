// libFuzzer target: arbitrary bytes through the small option parsers,
// chosen by the first byte: --logit-bias ID=BIAS, a layer list (--hidden,
// --attention; the model's layer count from the second byte), a list of
// counts (--lookahead W,N,G, --lookup-ngram MIN,MAX), and a number option
// of each type CLI11 reads (cli::add_number). A bad value may only ever be
// bad usage (heads::UsageError, CLI11's ParseError: exit 2); a value taken
// is the one the text says: in range, finite, never clamped.

#include <charconv>
#include <cctype>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <limits>
#include <string>
#include <string_view>
#include <type_traits>
#include <vector>

#include <CLI/CLI.hpp>

#include "cli/options.hpp"
#include "eval/layer_list.hpp"
#include "fuzz_check.hpp"
#include "sampling/params.hpp"
#include "tensor/error.hpp"

namespace {

using heads::fuzz::check;

void logit_bias(std::string_view text) {
    const auto [id, bias] = heads::sampling::parse_logit_bias(text);
    check(id >= 0, "a negative token id");
    check(std::isfinite(bias) || bias == -INFINITY, "a bias that is nan or +inf");
}

void layer_list(std::string_view text, std::int64_t n_layers) {
    for (const auto l : heads::parse_layer_list(text, n_layers, "--hidden"))
        check(l >= 0 && l < n_layers, "a layer the model lacks");
}

void counts(std::string_view text, std::size_t n) {
    const auto values = heads::cli::parse_counts(text, n, "--lookahead");
    check(values.size() == n, "not as many counts as asked");
    for (const int v : values) check(v >= 0, "a negative count");
}

// What CLI11 took must be what a strict reading of the text gives.
template <class T> void number(const std::string& text) {
    CLI::App app;
    T value{};
    heads::cli::add_number(app, "--x", value, "");
    try {
        app.parse(std::vector<std::string>{text, "--x"});  // parse takes the arguments in reverse
    } catch (const CLI::ParseError&) {
        return;  // bad usage: exit 2
    }
    if constexpr (std::is_floating_point_v<T>) {
        check(std::isfinite(value), "a real option taken as nan or inf");
        char* end = nullptr;
        const double exact = std::strtod(text.c_str(), &end);
        // CLI11 reads through long double: allow a rounding step.
        if (*end == '\0')
            check(std::abs(exact) <= double(std::numeric_limits<T>::max()) &&
                      std::abs(double(value) - exact) <= std::abs(exact) * 1e-6 + double(std::numeric_limits<T>::denorm_min()),
                  "a real option taken as another value");
    } else {
        std::string_view body = text;  // decimal, with a sign for a signed type
        if (std::is_signed_v<T> && body.starts_with('+') && !body.starts_with("+-")) body.remove_prefix(1);
        T exact{};
        const auto [end, error] = std::from_chars(body.data(), body.data() + body.size(), exact);
        check(!body.empty() && (std::isdigit(static_cast<unsigned char>(body[0])) || body[0] == '-') &&
                  error == std::errc() && end == body.data() + body.size() && value == exact,
              "an integer option taken other than its decimal text says (clamped, octal, hex?)");
    }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    if (size < 2) return 0;
    const std::string text(reinterpret_cast<const char*>(data) + 2, size - 2);
    try {
        switch (data[0] % 8) {
        case 0: logit_bias(text); break;
        case 1: layer_list(text, data[1]); break;
        case 2: counts(text, 1 + data[1] % 3); break;
        case 3: number<float>(text); break;
        case 4: number<double>(text); break;
        case 5: number<std::int64_t>(text); break;
        case 6: number<int>(text); break;
        default: number<std::uint64_t>(text); break;
        }
    } catch (const heads::UsageError&) {
    }
    return 0;
}
