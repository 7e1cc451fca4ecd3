#include "io/read_file.hpp"

#include <cerrno>
#include <cstring>

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include "tensor/error.hpp"

namespace heads {

std::string read_file(const std::filesystem::path& path, std::string_view what, FileKinds kinds) {
    const auto fail = [&](std::string_view reason) {
        return Error("{}: cannot read {}: {}", path.string(), what, reason);
    };
    // O_NONBLOCK only where a FIFO is refused anyway: opening one would wait for a writer.
    const int flags = O_RDONLY | O_CLOEXEC | (kinds == FileKinds::regular_only ? O_NONBLOCK : 0);
    const int fd = ::open(path.c_str(), flags);
    if (fd < 0) throw fail(std::strerror(errno));
    struct stat info {};
    if (::fstat(fd, &info) != 0) {
        const int error = errno;
        ::close(fd);
        throw fail(std::strerror(error));
    }
    // A directory opens, but its read fails with a message that depends on
    // the file system; say what it is at once.
    if (S_ISDIR(info.st_mode) || (kinds == FileKinds::regular_only && !S_ISREG(info.st_mode))) {
        ::close(fd);
        throw fail(S_ISDIR(info.st_mode) ? std::strerror(EISDIR) : "not a regular file");
    }
    std::string bytes;
    char buffer[1 << 16];
    for (;;) {
        const ssize_t got = ::read(fd, buffer, sizeof buffer);
        if (got < 0 && errno == EINTR) continue;
        if (got < 0) {
            const int error = errno;
            ::close(fd);
            throw fail(std::strerror(error));
        }
        if (got == 0) break;
        // A device such as /dev/zero never ends: a small file has a bound.
        if (bytes.size() + std::size_t(got) > kMaxSmallFile) {
            ::close(fd);
            throw Error("{}: {} is larger than {} MiB", path.string(), what, kMaxSmallFile >> 20);
        }
        bytes.append(buffer, std::size_t(got));
    }
    ::close(fd);
    return bytes;
}

}  // namespace heads
