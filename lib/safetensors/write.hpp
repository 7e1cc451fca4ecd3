#pragma once
// Writing safetensors frames: each frame alone is a valid .safetensors file
// (Python's safetensors and numpy read it), and frames written one after
// another to a stream make a stream of frames.

#include <cstdint>
#include <cstdio>
#include <filesystem>
#include <span>
#include <vector>

#include "io/output.hpp"
#include "safetensors/frame.hpp"
#include "safetensors/header.hpp"

namespace heads {

// Writes the header at construction, then takes the tensors' bytes in the
// order of `tensors`, in pieces of any size, straight to `out` (no copy):
// a producer can write rows as it computes them. finish() checks that the
// byte count matches. Nothing is flushed here: the tool decides when.
class FrameWriter {
public:
    FrameWriter(Sink out, const std::vector<TensorSpec>& tensors, const Metadata& metadata);

    void write(std::span<const std::byte> bytes);
    template <class T> void write(std::span<const T> values) { write(std::as_bytes(values)); }
    // Throws heads::Error when fewer bytes were written than the header promised.
    void finish();

private:
    Sink out_;
    std::uint64_t expected_ = 0;
    std::uint64_t written_ = 0;
};

// The whole frame: header, then each tensor's bytes from its own memory.
void write_frame(const Sink& out, const Frame& frame);

// A .safetensors file holding `frame`, written atomically (temporary + rename).
void write_frame_file(const std::filesystem::path& path, const Frame& frame);

}  // namespace heads
