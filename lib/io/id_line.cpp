#include "io/id_line.hpp"

#include <charconv>

#include "io/number.hpp"
#include "tensor/error.hpp"
#include "tensor/quote.hpp"

namespace heads {

void throw_bad_id(std::string_view token) { throw Error("bad token id {}", quote(token)); }

std::int32_t parse_id(std::string_view token) {
    const auto id = token.size() <= kLongestIdToken ? parse_count<std::int32_t>(token) : std::nullopt;
    if (!id) throw_bad_id(token);
    return *id;
}

void parse_ids(std::string_view line, std::vector<std::int32_t>& ids) {
    ids.clear();
    IdStreamParser parser;
    const auto push = [&](std::int32_t id) { ids.push_back(id); };
    parser.feed(line, push, [] { throw Error("a newline inside an id line"); });
    parser.finish(push);
}

void append_ids(std::string& out, std::span<const std::int32_t> ids) {
    char digits[16];
    for (std::size_t i = 0; i < ids.size(); ++i) {
        if (i > 0) out += ' ';
        const auto [end, error] = std::to_chars(digits, digits + sizeof digits, ids[i]);
        out.append(digits, end);
    }
}

void check_id(std::int32_t id, std::int64_t vocab_size) {
    if (id < 0 || id >= vocab_size)
        throw Error("token id {} is out of range (vocabulary of {})", id, vocab_size);
}

}  // namespace heads
