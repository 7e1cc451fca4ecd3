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

// An output file written under a temporary name beside PATH and renamed over
// it by commit(), so readers never see half a file; destroyed uncommitted
// (an error was thrown), it removes the temporary file.
class AtomicFile {
public:
    explicit AtomicFile(std::filesystem::path path);
    AtomicFile(const AtomicFile&) = delete;
    AtomicFile& operator=(const AtomicFile&) = delete;
    ~AtomicFile();

    std::FILE* get() const { return file_; }
    const std::filesystem::path& path() const { return path_; }
    // Flush, close and rename; throws heads::Error "PATH: reason" on failure.
    void commit();

private:
    std::filesystem::path path_;
    std::filesystem::path temporary_;
    std::FILE* file_ = nullptr;
};

}  // namespace heads
