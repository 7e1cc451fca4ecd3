#pragma once
// A whole small file (config.json, a head table, a list of heads) read into
// memory at once. Large inputs are mapped (mapped_file.hpp) or streamed
// (input_stream.hpp) instead.

#include <filesystem>
#include <string>
#include <string_view>

namespace heads {

// The file's bytes; throws heads::Error "PATH: cannot read WHAT".
std::string read_file(const std::filesystem::path& path, std::string_view what = "the file");

}  // namespace heads
