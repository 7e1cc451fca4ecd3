#pragma once
// A whole file mapped read-only into memory: tensors read from it are views
// that keep the mapping alive (no copy, and a tool in a pipe starts fast).

#include <cstddef>
#include <filesystem>
#include <memory>
#include <span>
#include <string>

namespace heads {

class MappedFile {
public:
    // Throws heads::Error "PATH: reason" when the file cannot be opened or
    // mapped, or is not a regular file (a FIFO is refused, not waited on).
    // While mapped, a SIGBUS on its pages (the file was truncated) ends the
    // process with "PROG: PATH: read error: ..." and status 1, after
    // remove_temporary_files().
    static std::shared_ptr<const MappedFile> open(const std::filesystem::path& path);

    MappedFile(const MappedFile&) = delete;
    MappedFile& operator=(const MappedFile&) = delete;
    ~MappedFile();

    std::span<const std::byte> bytes() const { return {data_, size_}; }
    const std::string& name() const { return name_; }

private:
    MappedFile() = default;

    const std::byte* data_ = nullptr;
    std::size_t size_ = 0;
    std::string name_;
    int slot_ = -1;  // this mapping's entry in the SIGBUS handler's table
};

}  // namespace heads
