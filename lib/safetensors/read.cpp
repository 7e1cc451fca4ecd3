#include "safetensors/read.hpp"

#include <cstdint>
#include <cstdlib>
#include <cstring>

#include <sys/mman.h>

#include "io/mapped_file.hpp"
#include "safetensors/header.hpp"
#include "tensor/error.hpp"

namespace heads {
namespace {

// Views into `data` where aligned to the element size, owned copies elsewhere.
Frame frame_from(const Header& header, const std::byte* data, const std::shared_ptr<const void>& owner) {
    Frame frame;
    frame.metadata = header.metadata;
    for (const auto& entry : header.tensors) {
        const std::byte* start = data + entry.begin;
        const std::size_t bytes = entry.end - entry.begin;
        const bool aligned = reinterpret_cast<std::uintptr_t>(start) % dtype_size(entry.spec.dtype) == 0;
        frame.add(entry.spec.name, aligned ? Tensor::view(entry.spec.dtype, entry.spec.shape, start, owner)
                                           : Tensor::copy_of(entry.spec.dtype, entry.spec.shape, {start, bytes}));
    }
    return frame;
}

Header parse_header_at(std::string_view json, const std::string& where) {
    try {
        return parse_header(json);
    } catch (const Error& error) {
        throw Error("{}: {}", where, error.what());
    }
}

// Memory for one frame's data: 64-byte aligned; large frames get address
// space that is only backed as the bytes arrive, so a hostile header that
// claims terabytes costs nothing before the stream proves it short.
std::shared_ptr<std::byte> allocate_data(std::uint64_t size, const std::string& where) {
    constexpr std::uint64_t kLarge = std::uint64_t(64) << 20;
    if (size <= kLarge) {
        void* memory = std::aligned_alloc(64, (size + 63) / 64 * 64 + 64);
        if (!memory) throw Error("{}: cannot allocate {} bytes of tensor data", where, size);
        return {static_cast<std::byte*>(memory), [](std::byte* p) { std::free(p); }};
    }
    void* memory = ::mmap(nullptr, size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (memory == MAP_FAILED) throw Error("{}: cannot allocate {} bytes of tensor data", where, size);
    return {static_cast<std::byte*>(memory), [size](std::byte* p) { ::munmap(p, size); }};
}

}  // namespace

Frame read_frame_bytes(std::span<const std::byte> bytes, std::shared_ptr<const void> owner, const std::string& name) {
    if (bytes.size() < 8)
        throw Error("{}: {} bytes is too short for a safetensors header size (8 bytes)", name, bytes.size());
    const std::uint64_t header_size = read_header_size(bytes.data());
    if (header_size > kMaxHeaderSize)
        throw Error("{}: header size {} is past the format's limit of {} bytes", name, header_size, kMaxHeaderSize);
    if (header_size > bytes.size() - 8)
        throw Error("{}: header size {} is past the end of the data ({} bytes)", name, header_size, bytes.size());
    const Header header =
        parse_header_at({reinterpret_cast<const char*>(bytes.data()) + 8, std::size_t(header_size)}, name);
    const std::uint64_t available = bytes.size() - 8 - header_size;
    if (header.data_size > available)
        throw Error("{}: truncated: the header promises {} bytes of tensor data, {} are there", name,
                    header.data_size, available);
    if (header.data_size < available)
        throw Error("{}: {} bytes of trailing garbage after the tensor data", name, available - header.data_size);
    return frame_from(header, bytes.data() + 8 + header_size, owner);
}

Frame read_frame_file(const std::filesystem::path& path, std::string* header_json) {
    const auto file = MappedFile::open(path);
    const auto bytes = file->bytes();
    Frame frame = read_frame_bytes(bytes, file, file->name());
    if (header_json)
        header_json->assign(reinterpret_cast<const char*>(bytes.data()) + 8, std::size_t(read_header_size(bytes.data())));
    return frame;
}

FrameReader::FrameReader(InputStream& input) : input_(&input) {}

FrameReader::FrameReader(const std::string& path)
    : owned_(std::make_unique<InputStream>(path)), input_(owned_.get()) {}

std::optional<Frame> FrameReader::next() {
    const std::string where = fmt::format("{}: frame {}", input_->name(), count_ + 1);
    std::byte size_bytes[8];
    const std::size_t got = input_->read(size_bytes);
    if (got == 0) return std::nullopt;
    if (got < 8) throw Error("{}: truncated: {} of the 8 bytes of its header size", where, got);
    const std::uint64_t header_size = read_header_size(size_bytes);
    if (header_size > kMaxHeaderSize)
        throw Error("{}: header size {} is past the format's limit of {} bytes", where, header_size, kMaxHeaderSize);

    std::string json(header_size, '\0');
    const std::size_t header_got = input_->read(std::as_writable_bytes(std::span(json)));
    if (header_got < header_size)
        throw Error("{}: truncated: {} of the {} bytes of its header", where, header_got, header_size);
    const Header header = parse_header_at(json, where);

    auto data = allocate_data(header.data_size, where);
    const std::size_t data_got = input_->read({data.get(), std::size_t(header.data_size)});
    if (data_got < header.data_size)
        throw Error("{}: truncated: {} of the {} bytes of its tensor data", where, data_got, header.data_size);
    ++count_;
    return frame_from(header, data.get(), data);
}

}  // namespace heads
