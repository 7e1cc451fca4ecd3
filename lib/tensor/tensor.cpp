#include "tensor/tensor.hpp"

#include <cstdlib>
#include <cstring>

#include <fmt/format.h>
#include <fmt/ranges.h>

namespace heads {

std::int64_t element_count(const Shape& shape) {
    std::int64_t count = 1;
    for (auto extent : shape) count *= extent;
    return count;
}

std::string shape_string(const Shape& shape) { return fmt::format("[{}]", fmt::join(shape, ", ")); }

Tensor Tensor::zeros(DType dtype, Shape shape) {
    for (auto extent : shape)
        if (extent < 0) throw std::invalid_argument("negative tensor extent in " + shape_string(shape));
    Tensor tensor;
    tensor.dtype_ = dtype;
    tensor.shape_ = std::move(shape);
    const std::size_t size = tensor.nbytes();
    const std::size_t rounded = (size + 63) / 64 * 64;
    void* memory = std::aligned_alloc(64, rounded == 0 ? 64 : rounded);
    if (!memory) throw std::bad_alloc();
    std::memset(memory, 0, rounded == 0 ? 64 : rounded);
    tensor.owner_ = std::shared_ptr<void>(memory, std::free);
    tensor.data_ = static_cast<const std::byte*>(memory);
    tensor.writable_ = true;
    return tensor;
}

Tensor Tensor::copy_of(DType dtype, Shape shape, std::span<const std::byte> bytes) {
    Tensor tensor = zeros(dtype, std::move(shape));
    if (bytes.size() != tensor.nbytes())
        throw std::invalid_argument(fmt::format("{} bytes for a {} {} tensor of {} bytes", bytes.size(),
                                                dtype_name(dtype), shape_string(tensor.shape_), tensor.nbytes()));
    // An empty span may have no data at all (a layer that kept no heads), and memcpy's source must not be null.
    if (!bytes.empty()) std::memcpy(tensor.mutable_bytes().data(), bytes.data(), bytes.size());
    return tensor;
}

Tensor Tensor::view(DType dtype, Shape shape, const std::byte* data, std::shared_ptr<const void> owner) {
    Tensor tensor;
    tensor.dtype_ = dtype;
    tensor.shape_ = std::move(shape);
    tensor.data_ = data;
    tensor.owner_ = std::move(owner);
    tensor.writable_ = false;
    return tensor;
}

std::int64_t Tensor::dim(int axis) const {
    const int index = axis < 0 ? axis + rank() : axis;
    if (index < 0 || index >= rank())
        throw std::out_of_range(fmt::format("axis {} of a rank-{} tensor", axis, rank()));
    return shape_[std::size_t(index)];
}

std::span<std::byte> Tensor::mutable_bytes() {
    if (!writable_) throw std::logic_error("write to a read-only tensor view");
    return {const_cast<std::byte*>(data_), nbytes()};
}

Tensor Tensor::reshaped(Shape shape) const {
    if (element_count(shape) != numel())
        throw std::invalid_argument(
            fmt::format("cannot reshape {} to {}", shape_string(shape_), shape_string(shape)));
    Tensor tensor = *this;
    tensor.shape_ = std::move(shape);
    return tensor;
}

void convert_to_f32(float* out, DType dtype, const std::byte* data, std::size_t count) {
    switch (dtype) {
    case DType::F32: std::memcpy(out, data, count * 4); break;
    case DType::BF16:
        for (std::size_t i = 0; i < count; ++i) {
            std::uint16_t bits;
            std::memcpy(&bits, data + 2 * i, 2);
            out[i] = bf16_to_f32(bits);
        }
        break;
    case DType::F16:
        for (std::size_t i = 0; i < count; ++i) {
            std::uint16_t bits;
            std::memcpy(&bits, data + 2 * i, 2);
            out[i] = f16_to_f32(bits);
        }
        break;
    case DType::F64:
        for (std::size_t i = 0; i < count; ++i) {
            double value;
            std::memcpy(&value, data + 8 * i, 8);
            out[i] = float(value);
        }
        break;
    default: throw std::invalid_argument(fmt::format("{} tensor is not floating point", dtype_name(dtype)));
    }
}

std::vector<float> Tensor::to_f32() const {
    std::vector<float> out(static_cast<std::size_t>(numel()));
    convert_to_f32(out.data(), dtype_, data_, out.size());
    return out;
}

void Tensor::check_dtype(DType wanted) const {
    if (wanted != dtype_)
        throw std::invalid_argument(
            fmt::format("tensor is {}, read as {}", dtype_name(dtype_), dtype_name(wanted)));
}

}  // namespace heads
