#include "tensor/dtype.hpp"

#include <array>
#include <cmath>
#include <utility>

namespace heads {
namespace {

struct DTypeInfo {
    DType dtype;
    std::string_view name;
    std::size_t size;
    bool floating;
};

constexpr std::array<DTypeInfo, 10> kDTypes{{
    {DType::F64, "F64", 8, true},
    {DType::F32, "F32", 4, true},
    {DType::F16, "F16", 2, true},
    {DType::BF16, "BF16", 2, true},
    {DType::I64, "I64", 8, false},
    {DType::I32, "I32", 4, false},
    {DType::I16, "I16", 2, false},
    {DType::I8, "I8", 1, false},
    {DType::U8, "U8", 1, false},
    {DType::Bool, "BOOL", 1, false},
}};

const DTypeInfo& info(DType dtype) { return kDTypes[std::size_t(dtype)]; }

}  // namespace

std::size_t dtype_size(DType dtype) { return info(dtype).size; }
std::string_view dtype_name(DType dtype) { return info(dtype).name; }
bool is_floating(DType dtype) { return info(dtype).floating; }

std::optional<DType> dtype_from_name(std::string_view name) {
    for (const auto& entry : kDTypes)
        if (entry.name == name) return entry.dtype;
    return std::nullopt;
}

float f16_to_f32(std::uint16_t bits) {
    const std::uint32_t sign = std::uint32_t(bits & 0x8000u) << 16;
    const int exponent = (bits >> 10) & 0x1f;
    const std::uint32_t mantissa = bits & 0x3ffu;
    float magnitude;
    if (exponent == 0)
        magnitude = std::ldexp(float(mantissa), -24);  // zero and subnormals
    else if (exponent == 31)
        magnitude = mantissa ? NAN : INFINITY;
    else
        magnitude = std::ldexp(float(mantissa | 0x400u), exponent - 25);
    std::uint32_t out;
    std::memcpy(&out, &magnitude, sizeof out);
    out |= sign;
    float value;
    std::memcpy(&value, &out, sizeof value);
    return value;
}

std::uint16_t f32_to_f16(float value) {
    std::uint32_t bits;
    std::memcpy(&bits, &value, sizeof bits);
    const std::uint16_t sign = std::uint16_t((bits >> 16) & 0x8000u);
    const float magnitude = std::fabs(value);
    if (std::isnan(value)) return sign | 0x7e00u;
    if (magnitude >= 65520.0f) return sign | 0x7c00u;  // rounds to infinity
    if (magnitude < 6.103515625e-05f) {                // subnormal half: multiples of 2^-24
        return sign | std::uint16_t(std::nearbyint(magnitude * 16777216.0f));
    }
    int exponent;
    const float fraction = std::frexp(magnitude, &exponent);  // magnitude = fraction * 2^exponent, fraction in [0.5, 1)
    auto mantissa = std::uint32_t(std::nearbyint(fraction * 2048.0f));  // 11 significant bits, round to even
    if (mantissa == 2048) {
        mantissa = 1024;
        ++exponent;
    }
    const std::uint32_t biased = std::uint32_t(exponent - 1 + 15);
    if (biased >= 31) return sign | 0x7c00u;
    return std::uint16_t(sign | (biased << 10) | (mantissa & 0x3ffu));
}

}  // namespace heads
