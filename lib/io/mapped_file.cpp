#include "io/mapped_file.hpp"

#include <cerrno>
#include <cstring>

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "tensor/error.hpp"

namespace heads {

std::shared_ptr<const MappedFile> MappedFile::open(const std::filesystem::path& path) {
    std::shared_ptr<MappedFile> file(new MappedFile);
    file->name_ = path.string();
    const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
    if (fd < 0) throw Error("{}: {}", file->name_, std::strerror(errno));
    struct stat info {};
    if (::fstat(fd, &info) != 0 || !S_ISREG(info.st_mode)) {
        const int error = S_ISDIR(info.st_mode) ? EISDIR : errno;
        ::close(fd);
        throw Error("{}: {}", file->name_, error ? std::strerror(error) : "not a regular file");
    }
    file->size_ = std::size_t(info.st_size);
    if (file->size_ > 0) {
        void* memory = ::mmap(nullptr, file->size_, PROT_READ, MAP_PRIVATE, fd, 0);
        const int error = errno;
        ::close(fd);
        if (memory == MAP_FAILED) throw Error("{}: cannot map: {}", file->name_, std::strerror(error));
        file->data_ = static_cast<const std::byte*>(memory);
    } else {
        ::close(fd);
    }
    return file;
}

MappedFile::~MappedFile() {
    if (data_) ::munmap(const_cast<std::byte*>(data_), size_);
}

}  // namespace heads
