#pragma once
// Writing that fails loudly: every short write throws std::system_error with
// the errno (EPIPE included, which the tool's edge turns into a quiet exit 0),
// and files appear whole or not at all.

#include <cstddef>
#include <cstdio>
#include <filesystem>
#include <span>
#include <string_view>

namespace heads {

// Throws std::system_error(errno) when the stream cannot take all the bytes.
void write_all(std::FILE* out, std::span<const std::byte> bytes);
void write_all(std::FILE* out, std::string_view text);
void flush(std::FILE* out);

// An output file that never destroys what PATH names and never shows half a
// result, as `-o FILE` must behave (DESIGN.md):
// - a regular file, or a name that does not exist yet, is written under a
//   temporary name beside it and renamed over it by commit(); a symlink is
//   followed, so the file it names is replaced and the link stays; an
//   existing file keeps its mode (and owner, where the process may set it);
// - a device, FIFO or socket is opened and written directly (renaming over
//   /dev/null would replace the device), and so are /dev/stdout,
//   /dev/stderr and /dev/fd/N, written through the descriptor itself;
// - a directory is an error at once.
// Destroyed uncommitted (an error was thrown), it removes the temporary
// file; so does SIGINT, SIGTERM or SIGHUP, before the process dies of the
// signal as usual, and exit() from anywhere (remove_temporary_files()).
class AtomicFile {
public:
    explicit AtomicFile(std::filesystem::path path);
    AtomicFile(const AtomicFile&) = delete;
    AtomicFile& operator=(const AtomicFile&) = delete;
    ~AtomicFile();

    std::FILE* get() const { return file_; }
    const std::filesystem::path& path() const { return path_; }
    // Flush, close and rename (or only flush and close, for a direct
    // write); throws heads::Error "PATH: reason" on failure.
    void commit();

private:
    void forget_temporary();

    std::filesystem::path path_;       // as given, for messages
    std::filesystem::path temporary_;  // empty for a direct write
    std::filesystem::path target_;     // what commit() renames onto: path_ with its symlinks followed
    std::FILE* file_ = nullptr;
    int slot_ = -1;  // this temporary file's entry in the table of remove_temporary_files()
};

// Removes the temporary files of every AtomicFile not yet committed. Only
// async-signal-safe calls: run from the signal handlers AtomicFile
// installs, and at exit, so that a process ended by a signal or by exit()
// (a library's fatal error) leaves no FILE.tmp.XXXXXX behind.
void remove_temporary_files() noexcept;

}  // namespace heads
