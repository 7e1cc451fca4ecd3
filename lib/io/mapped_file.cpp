#include "io/mapped_file.hpp"

#include <cerrno>
#include <cstdint>
#include <cstring>

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "tensor/error.hpp"

namespace heads {
namespace {

constexpr std::size_t kHugePage = std::size_t(2) << 20;

// Maps fd at an address aligned to kHugePage, so that the page cache's
// 2 MiB folios can be mapped by one page-table entry each, and asks for such
// folios (MADV_HUGEPAGE makes readahead allocate them). Decode streams every
// weight once per token: with 4 KiB mappings each page costs a TLB miss, a
// nested page walk in a VM; 2 MiB mappings decoded ~20% faster here
// (scripts/bench llamacpp). Small files are mapped plainly.
void* map_aligned(int fd, std::size_t size) {
    if (size < kHugePage) return ::mmap(nullptr, size, PROT_READ, MAP_PRIVATE, fd, 0);
    void* reserved = ::mmap(nullptr, size + kHugePage, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (reserved == MAP_FAILED) return MAP_FAILED;
    auto* base = static_cast<std::byte*>(reserved);
    auto* aligned = reinterpret_cast<std::byte*>((reinterpret_cast<std::uintptr_t>(base) + kHugePage - 1) &
                                                 ~std::uintptr_t(kHugePage - 1));
    void* memory = ::mmap(aligned, size, PROT_READ, MAP_PRIVATE | MAP_FIXED, fd, 0);
    if (memory == MAP_FAILED) {
        const int error = errno;
        ::munmap(reserved, size + kHugePage);
        errno = error;
        return MAP_FAILED;
    }
    if (aligned > base) ::munmap(base, std::size_t(aligned - base));
    ::munmap(aligned + size, std::size_t(base + size + kHugePage - (aligned + size)));
    ::madvise(memory, size, MADV_HUGEPAGE);  // a hint: kernels without THP ignore or refuse it
    return memory;
}

}  // namespace

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
        void* memory = map_aligned(fd, file->size_);
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
