#include "safetensors/write.hpp"

#include "io/output.hpp"
#include "tensor/error.hpp"

namespace heads {

FrameWriter::FrameWriter(Sink out, const std::vector<TensorSpec>& tensors, const Metadata& metadata)
    : out_(std::move(out)) {
    const std::string header = serialize_header(tensors, metadata);
    for (const auto& spec : tensors) expected_ += std::uint64_t(element_count(spec.shape)) * dtype_size(spec.dtype);
    write_all(out_, header);
}

void FrameWriter::write(std::span<const std::byte> bytes) {
    if (written_ + bytes.size() > expected_)
        throw Error("frame writer: {} bytes past the {} bytes of tensor data in the header",
                    written_ + bytes.size() - expected_, expected_);
    write_all(out_, bytes);
    written_ += bytes.size();
}

void FrameWriter::finish() {
    if (written_ != expected_)
        throw Error("frame writer: {} of the {} bytes of tensor data were written", written_, expected_);
}

void write_frame(const Sink& out, const Frame& frame) {
    std::vector<TensorSpec> specs;
    specs.reserve(frame.size());
    for (const auto& [name, tensor] : frame) specs.push_back({name, tensor.dtype(), tensor.shape()});
    FrameWriter writer(out, specs, frame.metadata);
    for (const auto& [name, tensor] : frame) writer.write(tensor.bytes());
    writer.finish();
}

void write_frame_file(const std::filesystem::path& path, const Frame& frame) {
    AtomicFile file(path);
    write_frame(file.get(), frame);
    file.commit();
}

}  // namespace heads
