#pragma once
// Writing that fails loudly: every short write throws std::system_error with
// the errno (EPIPE included, which the tool's edge turns into a quiet exit 0),
// and files appear whole or not at all.

#include <cstddef>
#include <cstdio>
#include <filesystem>
#include <span>
#include <string>
#include <string_view>

namespace heads {

// A stream and the name its write errors give: "standard output", or the
// path as the user gave it ("out.kv: write error: No space left on device").
struct Sink {
    // Implicit, for stdout; another stream bare is "the output".
    Sink(std::FILE* file) : file(file), name(file == stdout ? "standard output" : "the output") {}
    Sink(std::FILE* file, std::string name) : file(file), name(std::move(name)) {}
    std::FILE* file;
    std::string name;
};

// Throws std::system_error(errno), "NAME: write error: REASON", when the
// stream cannot take all the bytes.
void write_all(const Sink& out, std::span<const std::byte> bytes);
void write_all(const Sink& out, std::string_view text);
void flush(const Sink& out);

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

    // The stream, named by the path as given.
    Sink get() const { return {file_, path_.string()}; }
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
