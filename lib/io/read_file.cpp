#include "io/read_file.hpp"

#include <cerrno>
#include <cstring>

#include <fcntl.h>
#include <unistd.h>

#include "tensor/error.hpp"

namespace heads {

std::string read_file(const std::filesystem::path& path, std::string_view what) {
    const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
    if (fd < 0) throw Error("{}: cannot read {}: {}", path.string(), what, std::strerror(errno));
    std::string bytes;
    char buffer[1 << 16];
    for (;;) {
        const ssize_t got = ::read(fd, buffer, sizeof buffer);
        if (got < 0 && errno == EINTR) continue;
        if (got < 0) {  // a directory, say: it opens but cannot be read
            const int error = errno;
            ::close(fd);
            throw Error("{}: cannot read {}: {}", path.string(), what, std::strerror(error));
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
