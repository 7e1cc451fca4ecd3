#include "io/mapped_file.hpp"

#include <array>
#include <atomic>
#include <cerrno>
#include <csignal>
#include <cstdint>
#include <cstring>
#include <mutex>

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "io/output.hpp"
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

// The mappings alive, for the SIGBUS handler: a file truncated (or its disk
// gone) while mapped makes the next read of a lost page raise SIGBUS, which
// must become one line naming the file, not a silent death. A signal handler
// reaches only process-wide state, so this one table is global.
struct Mapping {
    std::atomic<bool> claimed{false};
    std::atomic<const std::byte*> begin{nullptr};  // published last: null while being filled or freed
    std::size_t size = 0;
    const char* name = nullptr;
};
constexpr int kMaxMappings = 256;
std::array<Mapping, kMaxMappings> mappings;

void write_stderr(const char* text) {
    for (std::size_t left = std::strlen(text); left > 0;) {
        const ssize_t put = ::write(STDERR_FILENO, text, left);
        if (put <= 0) return;
        text += put, left -= std::size_t(put);
    }
}

extern "C" void on_bus_error(int, siginfo_t* info, void*) {
    const auto* address = static_cast<const std::byte*>(info->si_addr);
    for (const Mapping& mapping : mappings) {
        const std::byte* begin = mapping.begin.load(std::memory_order_acquire);
        if (!begin || address < begin || address >= begin + mapping.size) continue;
        // Only async-signal-safe calls from here on.
        remove_temporary_files();
        write_stderr(program_invocation_short_name);
        write_stderr(": ");
        write_stderr(mapping.name);
        write_stderr(": read error: the file was truncated or became unreadable while in use\n");
        ::_exit(1);
    }
    // Not one of ours: SA_RESETHAND restored the default action, and the
    // faulting access, run again on return, dies of it as it would have.
}

void install_bus_handler() {
    static std::once_flag once;
    std::call_once(once, [] {
        struct sigaction action {};
        action.sa_sigaction = on_bus_error;
        action.sa_flags = SA_SIGINFO | SA_RESETHAND;
        sigemptyset(&action.sa_mask);
        ::sigaction(SIGBUS, &action, nullptr);
    });
}

int register_mapping(const std::byte* begin, std::size_t size, const char* name) {
    install_bus_handler();
    for (int slot = 0; slot < kMaxMappings; ++slot) {
        Mapping& mapping = mappings[slot];
        if (mapping.claimed.exchange(true)) continue;
        mapping.size = size;
        mapping.name = name;
        mapping.begin.store(begin, std::memory_order_release);
        return slot;
    }
    return -1;  // more files mapped at once than the table holds: a plain SIGBUS for this one
}

}  // namespace

std::shared_ptr<const MappedFile> MappedFile::open(const std::filesystem::path& path) {
    std::shared_ptr<MappedFile> file(new MappedFile);
    file->name_ = path.string();
    // O_NONBLOCK: a FIFO given as a weights file must be refused, not waited on for a writer.
    const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NONBLOCK);
    if (fd < 0) throw Error("{}: {}", file->name_, std::strerror(errno));
    struct stat info {};
    if (::fstat(fd, &info) != 0) {
        const int error = errno;
        ::close(fd);
        throw Error("{}: {}", file->name_, std::strerror(error));
    }
    if (!S_ISREG(info.st_mode)) {
        ::close(fd);
        throw Error("{}: {}", file->name_, S_ISDIR(info.st_mode) ? std::strerror(EISDIR) : "not a regular file");
    }
    file->size_ = std::size_t(info.st_size);
    if (file->size_ > 0) {
        void* memory = map_aligned(fd, file->size_);
        const int error = errno;
        ::close(fd);
        if (memory == MAP_FAILED) throw Error("{}: cannot map: {}", file->name_, std::strerror(error));
        file->data_ = static_cast<const std::byte*>(memory);
        file->slot_ = register_mapping(file->data_, file->size_, file->name_.c_str());
    } else {
        ::close(fd);
    }
    return file;
}

MappedFile::~MappedFile() {
    if (slot_ >= 0) {
        mappings[slot_].begin.store(nullptr);
        mappings[slot_].claimed.store(false);
    }
    if (data_) ::munmap(const_cast<std::byte*>(data_), size_);
}

}  // namespace heads
