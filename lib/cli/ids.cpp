#include "cli/ids.hpp"

#include "tensor/error.hpp"

namespace heads::cli {

IdReader::IdReader(std::vector<std::string> paths, std::int64_t vocab_size)
    : lines_(std::move(paths)), vocab_size_(vocab_size) {}

bool IdReader::next(std::vector<std::int32_t>& ids) {
    std::string_view line;
    if (!lines_.next(line)) return false;
    try {
        parse_ids(line, ids);
        if (vocab_size_ > 0)
            for (const auto id : ids) check_id(id, vocab_size_);
    } catch (const Error& error) {
        throw Error("{}: {}", where(), error.what());
    }
    return true;
}

}  // namespace heads::cli
