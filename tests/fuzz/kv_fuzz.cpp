// libFuzzer target: arbitrary bytes as a safetensors file, then as a KV
// frame (kv_from_frame, the ragged layout and the padded one of before). A
// hostile input may only ever raise heads::Error; anything else is a bug.

#include <cstddef>
#include <cstdint>
#include <span>

#include "kv/kv_frame.hpp"
#include "safetensors/read.hpp"
#include "tensor/error.hpp"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    const std::span<const std::byte> bytes(reinterpret_cast<const std::byte*>(data), size);
    try {
        const heads::Frame frame = heads::read_frame_bytes(bytes, nullptr, "fuzz");
        const heads::KvFrameContents contents = heads::kv_from_frame(frame, "fuzz");
        (void)contents.cache.total_slots();
    } catch (const heads::Error&) {
    }
    return 0;
}
