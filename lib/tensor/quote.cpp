#include "tensor/quote.hpp"

#include <fmt/format.h>

namespace heads {
namespace {

// The length of the well-formed UTF-8 sequence at the start of `text`
// (RFC 3629: no overlong forms, no surrogates, nothing above U+10FFFF), or
// 0 when it starts with a byte that begins none.
std::size_t utf8_length(std::string_view text) {
    const auto byte = [&](std::size_t i) { return static_cast<unsigned char>(text[i]); };
    const unsigned char lead = byte(0);
    if (lead < 0x80) return 1;
    std::size_t length = 0;
    unsigned char low = 0x80, high = 0xbf;  // the range of the second byte
    if (lead >= 0xc2 && lead <= 0xdf) {
        length = 2;
    } else if (lead >= 0xe0 && lead <= 0xef) {
        length = 3;
        if (lead == 0xe0) low = 0xa0;
        if (lead == 0xed) high = 0x9f;
    } else if (lead >= 0xf0 && lead <= 0xf4) {
        length = 4;
        if (lead == 0xf0) low = 0x90;
        if (lead == 0xf4) high = 0x8f;
    } else {
        return 0;
    }
    if (text.size() < length || byte(1) < low || byte(1) > high) return 0;
    for (std::size_t i = 2; i < length; ++i)
        if (byte(i) < 0x80 || byte(i) > 0xbf) return 0;
    return length;
}

void escape(std::string& out, std::string_view bytes) {
    for (const char c : bytes) out += fmt::format("\\x{:02x}", static_cast<unsigned char>(c));
}

}  // namespace

std::string quote(std::string_view text, std::size_t limit) {
    std::string out = "'";
    std::size_t at = 0;
    while (at < text.size()) {
        const std::size_t length = utf8_length(text.substr(at));
        const std::size_t taken = length == 0 ? 1 : length;
        if (at + taken > limit) break;
        const std::string_view piece = text.substr(at, taken);
        const auto lead = static_cast<unsigned char>(piece[0]);
        const bool c1 = length == 2 && lead == 0xc2 && static_cast<unsigned char>(piece[1]) < 0xa0;
        if (length == 0 || lead < 0x20 || lead == 0x7f || c1)
            escape(out, piece);
        else if (piece == "\\")
            out += "\\\\";
        else
            out += piece;
        at += taken;
    }
    if (at < text.size()) out += "...";
    out += '\'';
    return out;
}

}  // namespace heads
