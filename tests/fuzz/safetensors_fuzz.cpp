// libFuzzer target: arbitrary bytes as a safetensors file (read_frame_bytes)
// and as a stream of frames (FrameReader over a pipe-like file). A hostile
// input may only ever raise heads::Error; anything else is a bug.

#include <cstddef>
#include <cstdint>
#include <span>

#include <sys/mman.h>
#include <unistd.h>

#include "safetensors/read.hpp"
#include "tensor/error.hpp"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    const std::span<const std::byte> bytes(reinterpret_cast<const std::byte*>(data), size);
    try {
        const heads::Frame frame = heads::read_frame_bytes(bytes, nullptr, "fuzz");
        for (const auto& [name, tensor] : frame) (void)tensor.bytes();
    } catch (const heads::Error&) {
    }
    const int fd = ::memfd_create("fuzz", 0);
    if (fd < 0) return 0;
    if (::write(fd, data, size) == ssize_t(size) && ::lseek(fd, 0, SEEK_SET) == 0) {
        try {
            heads::FrameReader reader("/proc/self/fd/" + std::to_string(fd));
            while (reader.next()) {
            }
        } catch (const heads::Error&) {
        }
    }
    ::close(fd);
    return 0;
}
