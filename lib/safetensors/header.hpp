#pragma once
// The safetensors header: 8 bytes of little-endian size, then a JSON object
// mapping tensor names to {dtype, shape, data_offsets}, plus `__metadata__`.
// Parsing checks everything before any byte of data is trusted.

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "safetensors/frame.hpp"
#include "tensor/tensor.hpp"

namespace heads {

// The format's own bound on the JSON header, as the reference implementation has it.
inline constexpr std::uint64_t kMaxHeaderSize = 100'000'000;

struct TensorSpec {
    std::string name;
    DType dtype = DType::F32;
    Shape shape;
};

struct HeaderEntry {
    TensorSpec spec;
    std::uint64_t begin = 0;  // byte offsets into the data that follows the header
    std::uint64_t end = 0;
};

struct Header {
    std::vector<HeaderEntry> tensors;  // sorted by data offset
    Metadata metadata;
    std::uint64_t data_size = 0;  // the tensors tile [0, data_size) exactly
};

// Throws heads::Error naming what is wrong (the caller adds where): not JSON,
// not an object, bad metadata, unknown dtype, bad shape or offsets, a byte
// range that does not match shape × dtype, overlapping tensors, gaps.
Header parse_header(std::string_view json);

// The 8 size bytes, little-endian.
std::uint64_t read_header_size(const std::byte* bytes);

// The JSON header for tensors laid out back to back in the given order,
// padded with spaces to a multiple of 8 bytes, preceded by its 8-byte size.
std::string serialize_header(const std::vector<TensorSpec>& tensors, const Metadata& metadata);

}  // namespace heads
