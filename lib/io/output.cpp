#include "io/output.hpp"

#include <cerrno>
#include <cstring>
#include <system_error>

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include "tensor/error.hpp"

namespace heads {

void write_all(std::FILE* out, std::span<const std::byte> bytes) {
    if (bytes.empty()) return;
    if (std::fwrite(bytes.data(), 1, bytes.size(), out) != bytes.size())
        throw std::system_error(errno, std::generic_category(), "write error");
}

void write_all(std::FILE* out, std::string_view text) { write_all(out, std::as_bytes(std::span(text))); }

void flush(std::FILE* out) {
    if (std::fflush(out) != 0) throw std::system_error(errno, std::generic_category(), "write error");
}

AtomicFile::AtomicFile(std::filesystem::path path) : path_(std::move(path)) {
    std::string name = path_.string() + ".tmp.XXXXXX";
    const int fd = ::mkostemp(name.data(), O_CLOEXEC);
    if (fd < 0) throw Error("{}: {}", path_.string(), std::strerror(errno));
    // mkstemp makes the file 0600; give it what a plain create would.
    const mode_t mask = ::umask(0);
    ::umask(mask);
    ::fchmod(fd, 0666 & ~mask);
    temporary_ = name;
    file_ = ::fdopen(fd, "wb");
    if (!file_) {
        ::close(fd);
        std::filesystem::remove(temporary_);
        throw Error("{}: {}", path_.string(), std::strerror(errno));
    }
}

AtomicFile::~AtomicFile() {
    if (!file_) return;
    std::fclose(file_);
    std::error_code ignored;
    std::filesystem::remove(temporary_, ignored);
}

void AtomicFile::commit() {
    std::FILE* file = file_;
    file_ = nullptr;
    const bool written = std::fflush(file) == 0 && !std::ferror(file);
    int error = written ? 0 : errno;
    if (std::fclose(file) != 0 && written) error = errno;
    if (!written || error != 0 || std::rename(temporary_.c_str(), path_.c_str()) != 0) {
        if (error == 0) error = errno;
        std::error_code ignored;
        std::filesystem::remove(temporary_, ignored);
        throw Error("{}: {}", path_.string(), std::strerror(error ? error : EIO));
    }
}

}  // namespace heads
