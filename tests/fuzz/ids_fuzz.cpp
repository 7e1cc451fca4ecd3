// libFuzzer target: arbitrary bytes as id lines, parsed whole (parse_ids per
// line) and streamed in pieces (IdStreamParser); both must agree, and a
// hostile input may only ever raise heads::Error.

#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string_view>
#include <vector>

#include "fuzz_check.hpp"
#include "io/id_line.hpp"
#include "tensor/error.hpp"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    const std::string_view text(reinterpret_cast<const char*>(data), size);

    // Whole lines.
    std::vector<std::vector<std::int32_t>> whole;
    bool whole_ok = true;
    try {
        std::vector<std::int32_t> ids;
        for (std::size_t start = 0; start < text.size();) {
            const std::size_t end = std::min(text.find('\n', start), text.size());
            heads::parse_ids(text.substr(start, end - start), ids);
            whole.push_back(ids);
            start = end + 1;
        }
    } catch (const heads::Error&) {
        whole_ok = false;
    }

    // Streamed, in pieces of 1, 2, 3, ... bytes.
    std::vector<std::vector<std::int32_t>> streamed(1);
    bool streamed_ok = true;
    try {
        heads::IdStreamParser parser;
        const auto on_id = [&](std::int32_t id) { streamed.back().push_back(id); };
        const auto on_line = [&] { streamed.emplace_back(); };
        for (std::size_t at = 0, step = 1; at < text.size(); at += step, ++step)
            parser.feed(text.substr(at, step), on_id, on_line);
        if (!parser.finish(on_id)) streamed.pop_back();
    } catch (const heads::Error&) {
        streamed_ok = false;
    }
    heads::fuzz::check(whole_ok == streamed_ok, "parse_ids and IdStreamParser disagree on whether the input is valid");
    heads::fuzz::check(!whole_ok || whole == streamed, "parse_ids and IdStreamParser read different ids");
    for (const auto& line : whole)
        for (const auto id : line)
            heads::fuzz::check(id >= 0, "a negative id was accepted");
    return 0;
}
