#include "io/output.hpp"

#include <array>
#include <atomic>
#include <cerrno>
#include <charconv>
#include <csignal>
#include <cstdlib>
#include <cstring>
#include <mutex>
#include <optional>
#include <string>
#include <system_error>

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include "tensor/error.hpp"

namespace heads {
namespace {

// The temporary files not yet committed, for remove_temporary_files(). A
// signal handler can reach nothing but process-wide state, so this one
// table is global: each entry points at the name an AtomicFile owns, set by
// its constructor and cleared before the name goes away.
constexpr int kMaxTemporaries = 64;
std::array<std::atomic<const char*>, kMaxTemporaries> temporaries{};

constexpr std::array kCleanupSignals{SIGINT, SIGTERM, SIGHUP};

extern "C" void remove_and_die(int signal) {
    remove_temporary_files();
    // SA_RESETHAND restored the default action; the signal stays blocked
    // until this handler returns, and then kills the process as it would
    // have without us (the shell sees 128 + signal).
    ::raise(signal);
}

// Installs the handlers once per process, for the signals whose action is
// still the default: a signal the caller ignores (nohup) stays ignored.
void install_cleanup() {
    static std::once_flag once;
    std::call_once(once, [] {
        for (const int signal : kCleanupSignals) {
            struct sigaction old {};
            if (::sigaction(signal, nullptr, &old) != 0 || old.sa_handler != SIG_DFL) continue;
            struct sigaction action {};
            action.sa_handler = remove_and_die;
            action.sa_flags = SA_RESETHAND;
            sigemptyset(&action.sa_mask);
            for (const int other : kCleanupSignals) sigaddset(&action.sa_mask, other);
            ::sigaction(signal, &action, nullptr);
        }
        std::atexit([] { remove_temporary_files(); });
    });
}

int register_temporary(const char* name) {
    install_cleanup();
    for (int slot = 0; slot < kMaxTemporaries; ++slot) {
        const char* empty = nullptr;
        if (temporaries[slot].compare_exchange_strong(empty, name)) return slot;
    }
    return -1;  // more files open at once than the table holds: no cleanup on a signal for this one
}

// The descriptor a path names by itself: /dev/stdout, /dev/stderr,
// /dev/fd/N, /proc/self/fd/N. Writing to it must go through that
// descriptor: opened anew, a file stdout was appended to (>>) would be
// overwritten from its start, and renaming over it would detach it.
std::optional<int> descriptor_named(const std::filesystem::path& path) {
    const std::string name = path.lexically_normal().string();
    if (name == "/dev/stdout") return STDOUT_FILENO;
    if (name == "/dev/stderr") return STDERR_FILENO;
    for (const std::string_view prefix : {"/dev/fd/", "/proc/self/fd/"}) {
        if (!name.starts_with(prefix)) continue;
        const char* first = name.data() + prefix.size();
        const char* last = name.data() + name.size();
        int fd = -1;
        const auto [end, error] = std::from_chars(first, last, fd);
        if (error == std::errc() && end == last && first != last) return fd;
    }
    return std::nullopt;
}

// Follows the symlinks of `path` to the name a write lands on: the last
// link's target (which may not exist yet), or a descriptor's name.
std::filesystem::path follow_links(const std::filesystem::path& path) {
    std::filesystem::path at = path;
    for (int hops = 0;; ++hops) {
        if (descriptor_named(at)) return at;
        struct stat info {};
        if (::lstat(at.c_str(), &info) != 0 || !S_ISLNK(info.st_mode)) return at;
        if (hops == 40) throw Error("{}: {}", path.string(), std::strerror(ELOOP));
        const auto target = std::filesystem::read_symlink(at);
        at = target.is_absolute() ? target : at.parent_path() / target;
    }
}

[[noreturn]] void fail(const std::filesystem::path& path, int error) {
    throw Error("{}: {}", path.string(), std::strerror(error));
}

}  // namespace

void remove_temporary_files() noexcept {
    for (auto& entry : temporaries)
        if (const char* name = entry.exchange(nullptr)) ::unlink(name);
}

namespace {

[[noreturn]] void write_error(const Sink& out) {
    throw std::system_error(errno, std::generic_category(), out.name + ": write error");
}

}  // namespace

void write_all(const Sink& out, std::span<const std::byte> bytes) {
    if (bytes.empty()) return;
    if (std::fwrite(bytes.data(), 1, bytes.size(), out.file) != bytes.size()) write_error(out);
}

void write_all(const Sink& out, std::string_view text) { write_all(out, std::as_bytes(std::span(text))); }

void flush(const Sink& out) {
    if (std::fflush(out.file) != 0) write_error(out);
}

AtomicFile::AtomicFile(std::filesystem::path path) : path_(std::move(path)), target_(follow_links(path_)) {
    int fd = -1;
    if (const auto named = descriptor_named(target_)) {
        fd = ::fcntl(*named, F_DUPFD_CLOEXEC, 0);
        if (fd < 0) fail(path_, errno);
    } else {
        struct stat existing {};
        const bool exists = ::stat(target_.c_str(), &existing) == 0;
        if (!exists && errno != ENOENT) fail(path_, errno);
        if (exists && S_ISDIR(existing.st_mode)) fail(path_, EISDIR);
        if (exists && !S_ISREG(existing.st_mode)) {
            // A device, FIFO or socket: written in place (a FIFO waits for its reader here, as with `>`).
            fd = ::open(target_.c_str(), O_WRONLY | O_CLOEXEC | O_NOCTTY);
            if (fd < 0) fail(path_, errno);
        } else {
            std::string name = target_.string() + ".tmp.XXXXXX";
            fd = ::mkostemp(name.data(), O_CLOEXEC);
            if (fd < 0) fail(path_, errno);
            temporary_ = name;
            slot_ = register_temporary(temporary_.c_str());
            // mkstemp makes the file 0600: give it the mode the file had, or
            // what a plain create would.
            if (exists) {
                // Keeping the owner needs privileges most callers lack; the mode is what matters.
                [[maybe_unused]] const int ignored = ::fchown(fd, existing.st_uid, existing.st_gid);
                ::fchmod(fd, existing.st_mode & 07777);
            } else {
                const mode_t mask = ::umask(0);
                ::umask(mask);
                ::fchmod(fd, 0666 & ~mask);
            }
        }
    }
    file_ = ::fdopen(fd, "wb");
    if (!file_) {
        const int error = errno;
        ::close(fd);
        forget_temporary();
        fail(path_, error);
    }
}

void AtomicFile::forget_temporary() {
    if (temporary_.empty()) return;
    std::error_code ignored;
    std::filesystem::remove(temporary_, ignored);
    if (slot_ >= 0) temporaries[slot_].store(nullptr);
    slot_ = -1;
}

AtomicFile::~AtomicFile() {
    if (!file_) return;
    std::fclose(file_);
    forget_temporary();
}

void AtomicFile::commit() {
    std::FILE* file = file_;
    file_ = nullptr;
    // The last buffered bytes leave at the flush (ENOSPC shows there), or,
    // on some file systems, at the close: both are write errors.
    int error = 0;
    if (std::fflush(file) != 0 || std::ferror(file)) error = errno ? errno : EIO;
    if (std::fclose(file) != 0 && error == 0) error = errno ? errno : EIO;
    if (error != 0) {
        forget_temporary();
        throw Error("{}: write error: {}", path_.string(), std::strerror(error));
    }
    if (!temporary_.empty() && std::rename(temporary_.c_str(), target_.c_str()) != 0) {
        error = errno;
        forget_temporary();
        fail(path_, error);
    }
    // Renamed: the name is the file's now, not a temporary to remove.
    if (slot_ >= 0) temporaries[slot_].store(nullptr);
    slot_ = -1;
}

}  // namespace heads
