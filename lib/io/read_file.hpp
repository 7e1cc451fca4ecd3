#pragma once
// A whole small file (config.json, a head table, a list of heads) read into
// memory at once. Large inputs are mapped (mapped_file.hpp) or streamed
// (input_stream.hpp) instead.

#include <cstddef>
#include <filesystem>
#include <string>
#include <string_view>

namespace heads {

// The most read_file() takes: far above any config.json, index or head
// table, and a bound on what /dev/zero given as one would cost.
inline constexpr std::size_t kMaxSmallFile = std::size_t(64) << 20;

// What read_file() accepts besides regular files.
enum class FileKinds {
    readable,      // also pipes and devices: --mask-heads @<(...)
    regular_only,  // a file of a model directory: a FIFO there is refused at once, never waited on
};

// The file's bytes; throws heads::Error "PATH: cannot read WHAT: REASON"
// (REASON "Is a directory", "not a regular file", or the system's), or
// "PATH: WHAT is larger than 64 MiB".
std::string read_file(const std::filesystem::path& path, std::string_view what = "the file",
                      FileKinds kinds = FileKinds::readable);

}  // namespace heads
