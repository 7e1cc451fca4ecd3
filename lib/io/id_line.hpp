#pragma once
// Token id lines, the format `spm_encode --output_format=id` writes: one
// sequence per line, decimal ids separated by spaces; an empty line is an
// empty sequence. Parsing is strict: anything that is not a non-negative
// decimal that fits an int32 is "bad token id 'x'", never a silent 0.
// A data format (tools read it, and KV frames carry it in heads.tokens), so
// it lives below every library that reads it.

#include <cstdint>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "tensor/quote.hpp"

namespace heads {

// No id token is longer: a longer one is bad before it is read whole.
inline constexpr std::size_t kLongestIdToken = 16;

// One id; throws heads::Error "bad token id 'TOKEN'" (TOKEN as quote() shows it).
std::int32_t parse_id(std::string_view token);
[[noreturn]] void throw_bad_id(std::string_view token);

// Ids arriving in chunks of any size (a pipe fed one id at a time): each id
// is handed over as soon as the space or newline after it arrives. Errors
// (from parsing or thrown by the callbacks) carry no position: the caller
// adds it, with line() for the line being parsed.
class IdStreamParser {
public:
    // on_id(std::int32_t) per id, on_line_end() per '\n'.
    template <class OnId, class OnLineEnd> void feed(std::string_view chunk, OnId&& on_id, OnLineEnd&& on_line_end) {
        for (const char c : chunk) {
            if (c == '\n') {
                end_token(on_id);
                on_line_end();
                ++line_;
                open_line_ = false;
                continue;
            }
            open_line_ = true;
            if (c == ' ' || c == '\t') {
                end_token(on_id);
            } else {
                token_.push_back(c);
                // No id is this long: bad before it ends, once the message can show it cut with "...".
                if (token_.size() > kQuotedBytes) throw_bad_id(token_);
            }
        }
    }
    // At the end of the input: hands over the last id of a last line that
    // has no '\n' and returns whether there was such a line (to end it).
    template <class OnId> bool finish(OnId&& on_id) {
        end_token(on_id);
        const bool open_line = open_line_;
        open_line_ = false;
        return open_line;
    }
    // The line being parsed, from 1.
    std::size_t line() const { return line_; }

private:
    template <class OnId> void end_token(OnId&& on_id) {
        if (token_.empty()) return;
        const std::int32_t id = parse_id(token_);
        token_.clear();
        on_id(id);
    }

    std::string token_;
    std::size_t line_ = 1;
    bool open_line_ = false;
};

// The ids of one whole line (without its '\n').
void parse_ids(std::string_view line, std::vector<std::int32_t>& ids);

// Appends ids in the id-line format ("1 15043 3186"), without the newline.
void append_ids(std::string& out, std::span<const std::int32_t> ids);

// Checks 0 <= id < vocab_size; throws heads::Error
// "token id ID is out of range (vocabulary of N)".
void check_id(std::int32_t id, std::int64_t vocab_size);

}  // namespace heads
