#pragma once
// Element types of tensors, spelled as safetensors spells them, and the
// conversions between the 16-bit floats and float.

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <optional>
#include <string_view>

namespace heads {

enum class DType { F64, F32, F16, BF16, I64, I32, I16, I8, U8, Bool };

std::size_t dtype_size(DType dtype);
std::string_view dtype_name(DType dtype);  // "F32", "BF16", ... as in safetensors headers
std::optional<DType> dtype_from_name(std::string_view name);
bool is_floating(DType dtype);

inline float bf16_to_f32(std::uint16_t bits) {
    std::uint32_t wide = std::uint32_t(bits) << 16;
    float value;
    std::memcpy(&value, &wide, sizeof value);
    return value;
}

// Round to nearest even, as torch and oneDNN do; NaN stays NaN.
inline std::uint16_t f32_to_bf16(float value) {
    std::uint32_t bits;
    std::memcpy(&bits, &value, sizeof bits);
    if ((bits & 0x7fffffffu) > 0x7f800000u) return std::uint16_t((bits >> 16) | 0x40);
    bits += 0x7fffu + ((bits >> 16) & 1u);
    return std::uint16_t(bits >> 16);
}

float f16_to_f32(std::uint16_t bits);
std::uint16_t f32_to_f16(float value);

}  // namespace heads
