#pragma once
// Reading safetensors: a file through mmap (tensors are zero-copy views of
// the mapping), or a stream of frames (a pipe) one frame per call.

#include <cstddef>
#include <filesystem>
#include <memory>
#include <optional>
#include <span>
#include <string>

#include "io/input_stream.hpp"
#include "safetensors/frame.hpp"

namespace heads {

// One frame in a file of exactly one frame (a .safetensors file, a model
// shard). Throws heads::Error "PATH: what is wrong". When `header_json` is
// given it receives the JSON header text as stored (a model's fingerprint
// hashes it).
Frame read_frame_file(const std::filesystem::path& path, std::string* header_json = nullptr);

// One frame held in `bytes`, which must hold exactly one frame; the tensors
// are views of `bytes` kept alive by `owner` (copies only where a tensor is
// not aligned to its element size). Errors are prefixed with `name`.
Frame read_frame_bytes(std::span<const std::byte> bytes, std::shared_ptr<const void> owner, const std::string& name);

// Frames back to back from a stream. Each frame's tensors share one aligned
// buffer read straight from the input.
class FrameReader {
public:
    explicit FrameReader(InputStream& input);
    explicit FrameReader(const std::string& path);  // "-" is stdin

    // The next frame; nullopt at a clean end (between frames). A frame cut
    // short is heads::Error "NAME: frame N: truncated ...", N counting from 1.
    std::optional<Frame> next();
    // Frames returned so far.
    std::size_t count() const { return count_; }

private:
    std::unique_ptr<InputStream> owned_;
    InputStream* input_;
    std::size_t count_ = 0;
};

}  // namespace heads
