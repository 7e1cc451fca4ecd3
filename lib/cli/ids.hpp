#pragma once
// Id lines (io/id_line.hpp) read from the FILE arguments of a tool.

#include <cstdint>
#include <string>
#include <vector>

#include "cli/options.hpp"
#include "io/id_line.hpp"

namespace heads::cli {

// Id lines from FILE arguments; every error says "FILE:LINE: ...".
class IdReader {
public:
    // vocab_size 0: no range check.
    explicit IdReader(std::vector<std::string> paths, std::int64_t vocab_size = 0);
    // The next line's ids (empty for an empty line); false at the end.
    bool next(std::vector<std::int32_t>& ids);
    std::string where() const { return lines_.where(); }

private:
    LineReader lines_;
    std::int64_t vocab_size_;
};

}  // namespace heads::cli
