#pragma once
// User-provided text (a token, a spec, a tensor name, a line of a file) as a
// message shows it: in single quotes, cut to a readable length with "...",
// and byte for byte unambiguous on a terminal. Every message that echoes
// input goes through quote(), so that a NUL does not cut the message, a CR
// does not overwrite it, invalid UTF-8 does not reach stderr raw, and a
// megabyte-long value does not become a megabyte-long line.

#include <cstddef>
#include <string>
#include <string_view>

namespace heads {

// The most bytes of the text quote() shows before "...".
inline constexpr std::size_t kQuotedBytes = 48;

// "'TEXT'": valid UTF-8 kept as it is; control bytes (C0, DEL, C1),
// invalid UTF-8 and the backslash escaped as \xNN (the backslash as \\);
// text longer than `limit` bytes cut at a character boundary and ended
// with "..." inside the quotes.
std::string quote(std::string_view text, std::size_t limit = kQuotedBytes);

}  // namespace heads
