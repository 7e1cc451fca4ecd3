#include "io/input_stream.hpp"

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <system_error>

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include "io/output.hpp"
#include "tensor/error.hpp"

namespace heads {
namespace {

constexpr std::size_t kReadSize = std::size_t(1) << 20;

}  // namespace

InputStream::InputStream(const std::string& path) : buffer_(kReadSize) {
    if (path == "-") {
        fd_ = STDIN_FILENO;
        name_ = "<stdin>";
        return;
    }
    name_ = path;
    fd_ = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
    if (fd_ < 0) throw Error("{}: {}", path, std::strerror(errno));
    owns_fd_ = true;
    struct stat info {};
    if (::fstat(fd_, &info) == 0 && S_ISDIR(info.st_mode)) {
        ::close(fd_);
        throw Error("{}: {}", path, std::strerror(EISDIR));
    }
}

InputStream::~InputStream() {
    if (owns_fd_) ::close(fd_);
}

bool InputStream::fill() {
    if (at_end_) return false;
    if (begin_ > 0) {  // keep the unconsumed tail at the front
        std::memmove(buffer_.data(), buffer_.data() + begin_, end_ - begin_);
        end_ -= begin_;
        begin_ = 0;
    }
    if (buffer_.size() - end_ < kReadSize / 2) buffer_.resize(std::max(buffer_.size() * 2, end_ + kReadSize));
    flush(stdout);
    for (;;) {
        const ssize_t count = ::read(fd_, buffer_.data() + end_, buffer_.size() - end_);
        if (count > 0) {
            end_ += std::size_t(count);
            return true;
        }
        if (count == 0) {
            at_end_ = true;
            return false;
        }
        if (errno != EINTR) throw Error("{}: {}", name_, std::strerror(errno));
    }
}

bool InputStream::next_line(std::string_view& line) {
    std::size_t scanned = begin_;
    for (;;) {
        const char* start = buffer_.data() + scanned;
        const void* newline = std::memchr(start, '\n', end_ - scanned);
        if (newline) {
            const auto stop = std::size_t(static_cast<const char*>(newline) - buffer_.data());
            line = std::string_view(buffer_.data() + begin_, stop - begin_);
            begin_ = stop + 1;
            ++line_number_;
            return true;
        }
        scanned = end_ - begin_;  // offsets relative to begin_, which fill() moves to 0
        if (!fill()) break;
    }
    if (begin_ == end_) return false;
    line = std::string_view(buffer_.data() + begin_, end_ - begin_);
    begin_ = end_;
    ++line_number_;
    return true;
}

bool InputStream::has_line() const {
    return std::memchr(buffer_.data() + begin_, '\n', end_ - begin_) != nullptr || (at_end_ && begin_ < end_);
}

std::string_view InputStream::next_chunk() {
    if (begin_ == end_ && !fill()) return {};
    std::string_view chunk(buffer_.data() + begin_, end_ - begin_);
    begin_ = end_;
    return chunk;
}

std::size_t InputStream::read(std::span<std::byte> bytes) {
    std::size_t done = 0;
    while (done < bytes.size()) {
        if (begin_ == end_) {
            // A big request goes straight into the caller's memory.
            if (bytes.size() - done >= kReadSize && !at_end_) {
                flush(stdout);
                const ssize_t count = ::read(fd_, bytes.data() + done, bytes.size() - done);
                if (count > 0) {
                    done += std::size_t(count);
                    continue;
                }
                if (count == 0) {
                    at_end_ = true;
                    break;
                }
                if (errno == EINTR) continue;
                throw Error("{}: {}", name_, std::strerror(errno));
            }
            if (!fill()) break;
        }
        const std::size_t take = std::min(bytes.size() - done, end_ - begin_);
        std::memcpy(bytes.data() + done, buffer_.data() + begin_, take);
        begin_ += take;
        done += take;
    }
    return done;
}

}  // namespace heads
