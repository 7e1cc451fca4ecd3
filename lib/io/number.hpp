#pragma once
// The one strict reading of a count (an id, a layer, a head, a window size)
// in text: decimal digits only, no sign, no space, and it fits T. Every
// parser of counts goes through it, so "-0", "+1" and " 1" are refused
// everywhere alike; the caller words the error, since only it knows what the
// count means.

#include <charconv>
#include <concepts>
#include <cstdint>
#include <optional>
#include <string_view>

namespace heads {

template <std::integral T = std::int64_t> std::optional<T> parse_count(std::string_view text) {
    // from_chars takes a leading '-' (so "-0" would be 0); a count never has one.
    if (text.empty() || text.front() < '0' || text.front() > '9') return std::nullopt;
    T value{};
    const auto [end, error] = std::from_chars(text.data(), text.data() + text.size(), value);
    if (error != std::errc() || end != text.data() + text.size() || value < 0) return std::nullopt;
    return value;
}

}  // namespace heads
