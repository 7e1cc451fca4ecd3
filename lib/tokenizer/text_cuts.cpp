#include "tokenizer/text_cuts.hpp"

#include <algorithm>
#include <cstring>

namespace heads {
namespace {

constexpr std::string_view kSpaceSymbol = "\xe2\x96\x81";  // U+2581, sentencepiece's space
constexpr std::string_view kReplacement = "\xef\xbf\xbd";  // U+FFFD, what sentencepiece reads invalid UTF-8 as

bool continuation(unsigned char byte) { return (byte & 0xc0) == 0x80; }

// The length of the UTF-8 character led by `lead`, 0 for a byte that
// leads none.
std::size_t sequence_length(unsigned char lead) {
    if (lead < 0x80) return 1;
    if ((lead & 0xe0) == 0xc0) return 2;
    if ((lead & 0xf0) == 0xe0) return 3;
    if ((lead & 0xf8) == 0xf0) return 4;
    return 0;
}

// Calls on_char for each character of `text`; false when it is not UTF-8
// made of whole characters.
template <class OnChar>
bool for_each_char(std::string_view text, OnChar on_char) {
    for (std::size_t at = 0; at < text.size();) {
        const std::size_t length = sequence_length(static_cast<unsigned char>(text[at]));
        if (length == 0 || length > text.size() - at) return false;
        for (std::size_t k = 1; k < length; ++k)
            if (!continuation(static_cast<unsigned char>(text[at + k]))) return false;
        on_char(text.substr(at, length));
        at += length;
    }
    return true;
}

// The UTF-8 character that ends just before `end`, or empty when the bytes
// there are not one.
std::string_view char_before(std::string_view text, std::size_t end) {
    std::size_t lead = end;
    do {
        if (lead == 0 || end - lead == 4) return {};
        --lead;
    } while (continuation(static_cast<unsigned char>(text[lead])));
    const std::size_t length = sequence_length(static_cast<unsigned char>(text[lead]));
    return length == end - lead ? text.substr(lead, length) : std::string_view{};
}

}  // namespace

TextCuts::TextCuts(const ModelSpec& spec) {
    bool space_known = spec.byte_fallback;
    for (const auto& piece : spec.pieces) {
        using enum ModelSpec::PieceType;
        if (piece.type != normal && piece.type != unknown && piece.type != control && piece.type != byte) return;
        if (piece.text == kSpaceSymbol && piece.type == ModelSpec::PieceType::normal) space_known = true;
        std::string_view previous;
        const bool utf8 = for_each_char(piece.text, [&](std::string_view c) {
            if (c == kSpaceSymbol && !previous.empty()) joined_to_space_.emplace(previous);
            previous = c;
        });
        if (!utf8) return;
    }
    allowed_ = spec.type == ModelSpec::Type::bpe && !spec.has_charsmap && spec.escape_whitespaces &&
               !spec.treat_whitespace_as_suffix && space_known &&
               // Without a dummy prefix, removing extra whitespace would drop the space at the cut.
               (spec.add_dummy_prefix || !spec.remove_extra_whitespaces);
    drops_leading_space_ = spec.add_dummy_prefix;
    // Removing extra whitespace joins a run of spaces into one: never cut in it.
    cuts_after_space_ = !spec.remove_extra_whitespaces && !joined_to_space_.contains(std::string(kSpaceSymbol));
}

bool TextCuts::safe_cut(std::string_view text, std::size_t at) const {
    // The part after the cut must keep a byte after its dropped space: an
    // empty text gets no dummy prefix.
    if (at == 0 || at + 1 >= text.size()) return false;
    const auto before = static_cast<unsigned char>(text[at - 1]);
    const std::string_view c = char_before(text, at);
    // A U+2581 in the text is a space once normalized (one that removing
    // extra whitespace strips at the end of a part).
    if (before == ' ' || c == kSpaceSymbol) return cuts_after_space_;
    // Sentencepiece reads the character as itself or, when it finds it
    // invalid (its UTF-8 checks are its own), as U+FFFD: both must be safe.
    const bool plain = before > 0x20 && before < 0x7f;
    if (!plain && joined_to_space_.contains(std::string(kReplacement))) return false;
    return !c.empty() && !joined_to_space_.contains(std::string(c));
}

std::vector<std::string_view> TextCuts::parts(std::string_view text, std::size_t part_bytes) const {
    std::vector<std::string_view> parts;
    std::size_t from = 0;  // where the current part starts (after a dropped space)
    // A part is never empty: an empty one would lose the U+2581 of its dropped space.
    for (std::size_t at = std::max(part_bytes, std::size_t(1)); allowed_ && at < text.size();) {
        const void* space = std::memchr(text.data() + at, ' ', text.size() - at);
        if (space == nullptr) break;
        at = std::size_t(static_cast<const char*>(space) - text.data());
        if (!safe_cut(text, at)) {
            ++at;
            continue;
        }
        parts.push_back(text.substr(from, at - from));
        from = drops_leading_space_ ? at + 1 : at;
        at = std::max(at + part_bytes, from + 1);
    }
    parts.push_back(text.substr(from));
    return parts;
}

}  // namespace heads
