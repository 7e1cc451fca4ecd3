#pragma once
// A tensor is a dtype, a shape and bytes: either owned (64-byte aligned, so
// oneDNN and SIMD loops can use it directly) or a read-only view into memory
// someone else keeps alive, such as an mmapped safetensors file.

#include <cstddef>
#include <cstdint>
#include <memory>
#include <span>
#include <stdexcept>
#include <string>
#include <vector>

#include "tensor/dtype.hpp"

namespace heads {

using Shape = std::vector<std::int64_t>;

std::int64_t element_count(const Shape& shape);
std::string shape_string(const Shape& shape);  // "[2, 3, 4]"

template <class T> constexpr DType dtype_of();
template <> constexpr DType dtype_of<double>() { return DType::F64; }
template <> constexpr DType dtype_of<float>() { return DType::F32; }
template <> constexpr DType dtype_of<std::int64_t>() { return DType::I64; }
template <> constexpr DType dtype_of<std::int32_t>() { return DType::I32; }
template <> constexpr DType dtype_of<std::int16_t>() { return DType::I16; }
template <> constexpr DType dtype_of<std::int8_t>() { return DType::I8; }
template <> constexpr DType dtype_of<std::uint8_t>() { return DType::U8; }

// `count` elements of a floating dtype at `data` as float into `out`;
// throws std::invalid_argument for an integer dtype.
void convert_to_f32(float* out, DType dtype, const std::byte* data, std::size_t count);

class Tensor {
public:
    Tensor() = default;

    // Owned, zero-filled, 64-byte aligned.
    static Tensor zeros(DType dtype, Shape shape);
    // Owned copy of `bytes` (size must equal the shape's byte size).
    static Tensor copy_of(DType dtype, Shape shape, std::span<const std::byte> bytes);
    // Read-only view; `owner` keeps the memory alive as long as any view of it.
    static Tensor view(DType dtype, Shape shape, const std::byte* data, std::shared_ptr<const void> owner);

    DType dtype() const { return dtype_; }
    const Shape& shape() const { return shape_; }
    int rank() const { return int(shape_.size()); }
    std::int64_t dim(int axis) const;  // negative axis counts from the end
    std::int64_t numel() const { return element_count(shape_); }
    std::size_t nbytes() const { return std::size_t(numel()) * dtype_size(dtype_); }
    bool empty() const { return data_ == nullptr && numel() == 0; }
    bool writable() const { return writable_; }

    std::span<const std::byte> bytes() const { return {data_, nbytes()}; }
    std::span<std::byte> mutable_bytes();

    template <class T> std::span<const T> data() const {
        check_dtype(dtype_of<T>());
        return {reinterpret_cast<const T*>(data_), std::size_t(numel())};
    }
    template <class T> std::span<T> mutable_data() {
        check_dtype(dtype_of<T>());
        auto raw = mutable_bytes();
        return {reinterpret_cast<T*>(raw.data()), std::size_t(numel())};
    }

    // Same bytes, another shape of equal element count (a view sharing the owner).
    Tensor reshaped(Shape shape) const;
    // Every element as float, whatever the floating dtype (owned copy).
    std::vector<float> to_f32() const;

private:
    void check_dtype(DType wanted) const;

    DType dtype_ = DType::F32;
    Shape shape_;
    const std::byte* data_ = nullptr;
    std::shared_ptr<const void> owner_;
    bool writable_ = false;
};

}  // namespace heads
