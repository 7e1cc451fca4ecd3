#include "tokenizer/stream_decoder.hpp"

#include <cstdint>

namespace heads {
namespace {

constexpr std::string_view kReplacement = "\xef\xbf\xbd";  // U+FFFD

bool is_trail(unsigned char c) { return (c & 0xc0) == 0x80; }

// Length of the UTF-8 character at the front of `bytes`, or 0 when it is
// not one: sentencepiece's DecodeUTF8 + IsValidDecodeUTF8, rule for rule
// (an encoded U+FFFD counts as valid).
std::size_t valid_char_length(std::string_view bytes) {
    const auto b = [&](std::size_t i) { return static_cast<unsigned char>(bytes[i]); };
    const std::size_t size = bytes.size();
    const auto valid_codepoint = [](std::uint32_t c) { return c < 0xd800 || (c >= 0xe000 && c <= 0x10ffff); };
    if (b(0) < 0x80) return 1;
    if (size >= 2 && (b(0) & 0xe0) == 0xc0) {
        const std::uint32_t cp = (b(0) & 0x1fu) << 6 | (b(1) & 0x3fu);
        if (is_trail(b(1)) && cp >= 0x80 && valid_codepoint(cp)) return 2;
    } else if (size >= 3 && (b(0) & 0xf0) == 0xe0) {
        const std::uint32_t cp = (b(0) & 0x0fu) << 12 | (b(1) & 0x3fu) << 6 | (b(2) & 0x3fu);
        if (is_trail(b(1)) && is_trail(b(2)) && cp >= 0x800 && valid_codepoint(cp)) return 3;
    } else if (size >= 4 && (b(0) & 0xf8) == 0xf0) {
        const std::uint32_t cp = (b(0) & 0x07u) << 18 | (b(1) & 0x3fu) << 12 | (b(2) & 0x3fu) << 6 | (b(3) & 0x3fu);
        if (is_trail(b(1)) && is_trail(b(2)) && is_trail(b(3)) && cp >= 0x10000 && valid_codepoint(cp)) return 4;
    }
    return 0;
}

// Whether more bytes could still make the front of `bytes` a character:
// a lead byte whose character is not complete yet, followed only by trail bytes.
bool may_complete(std::string_view bytes) {
    const auto lead = static_cast<unsigned char>(bytes[0]);
    const std::size_t needed = (lead & 0xe0) == 0xc0 ? 2 : (lead & 0xf0) == 0xe0 ? 3 : (lead & 0xf8) == 0xf0 ? 4 : 1;
    if (bytes.size() >= needed) return false;
    for (std::size_t i = 1; i < bytes.size(); ++i)
        if (!is_trail(static_cast<unsigned char>(bytes[i]))) return false;
    return true;
}

}  // namespace

void StreamDecoder::append(std::string& out, std::string_view text) {
    out += text;
    if (!text.empty()) emitted_ = true;
}

void StreamDecoder::drain_bytes(std::string& out, bool final) {
    std::size_t at = 0;
    while (at < pending_.size()) {
        const std::string_view rest = std::string_view(pending_).substr(at);
        if (const std::size_t length = valid_char_length(rest)) {
            append(out, rest.substr(0, length));
            at += length;
        } else if (!final && may_complete(rest)) {
            break;
        } else {
            append(out, kReplacement);
            at += 1;
        }
    }
    pending_.erase(0, at);
}

void StreamDecoder::push(int id, std::string& out) {
    tokenizer_->check_id(id);
    using Kind = Tokenizer::PieceInfo::Kind;
    const auto& piece = tokenizer_->info(id);
    if (piece.kind == Kind::byte) {
        pending_ += char(piece.byte);
        drain_bytes(out, false);
        return;
    }
    drain_bytes(out, true);
    if (start_seen_ || emitted_) at_start_ = false;
    start_seen_ = false;
    switch (piece.kind) {
    case Kind::control: return;  // <s>, </s>: invisible
    case Kind::unknown: append(out, tokenizer_->unknown_surface()); return;
    default: break;
    }
    std::string_view text = piece.surface;
    if (at_start_ && tokenizer_->strips_leading_space() && piece.leading_space) {
        text.remove_prefix(1);
        start_seen_ = !tokenizer_->strips_every_leading_space();
    }
    append(out, text);
}

void StreamDecoder::finish(std::string& out) {
    drain_bytes(out, true);
    emitted_ = false;
    at_start_ = true;
    start_seen_ = false;
}

}  // namespace heads
