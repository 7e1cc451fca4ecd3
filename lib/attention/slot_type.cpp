#include "attention/slot_type.hpp"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <stdexcept>

namespace heads {
namespace {

// The largest |q| of a scaled type.
int steps(SlotType type) { return type == SlotType::q8 ? 127 : 7; }

// x / scale rounded to the nearest step, within the type's range (in double,
// so that the rounding alone decides the error).
int step_of(float x, double inverse, int limit) {
    return std::clamp(int(std::lround(double(x) * inverse)), -limit, limit);
}

}  // namespace

std::string_view slot_type_name(SlotType type) {
    switch (type) {
        case SlotType::f32: return "f32";
        case SlotType::bf16: return "bf16";
        case SlotType::q8: return "q8";
        case SlotType::q4: return "q4";
    }
    return "?";
}

std::optional<SlotType> slot_type_from_name(std::string_view name) {
    for (const auto type : {SlotType::f32, SlotType::bf16, SlotType::q8, SlotType::q4})
        if (slot_type_name(type) == name) return type;
    return std::nullopt;
}

std::int64_t slot_bytes(SlotType type, std::int64_t head_dim) {
    const std::int64_t scales = slot_type_scaled(type) ? 2 * std::int64_t(sizeof(float)) : 0;
    return 2 * slot_row_bytes(type, head_dim) + scales + std::int64_t(sizeof(std::int32_t));
}

void quantize_row(SlotType type, const float* x, std::int64_t n, std::uint8_t* row, float& scale) {
    scale = 1.0f;
    if (type == SlotType::f32) {
        std::memcpy(row, x, sizeof(float) * std::size_t(n));
        return;
    }
    if (type == SlotType::bf16) {
        for (std::int64_t d = 0; d < n; ++d) {
            const std::uint16_t bits = f32_to_bf16(x[d]);
            std::memcpy(row + 2 * d, &bits, sizeof bits);
        }
        return;
    }
    float top = 0;
    for (std::int64_t d = 0; d < n; ++d) top = std::max(top, std::fabs(x[d]));
    const int limit = steps(type);
    scale = top / float(limit);
    // All zeros (or a scale that underflows): every step is 0, and so is every value read back.
    const double inverse = scale > 0 ? 1.0 / double(scale) : 0.0;
    if (type == SlotType::q8) {
        for (std::int64_t d = 0; d < n; ++d) row[d] = std::uint8_t(std::int8_t(step_of(x[d], inverse, limit)));
        return;
    }
    std::fill(row, row + slot_row_bytes(type, n), std::uint8_t(0x88));
    for (std::int64_t d = 0; d < n; ++d) {
        const auto nibble = std::uint8_t(step_of(x[d], inverse, limit) + 8);
        std::uint8_t& byte = row[d / 2];
        byte = d % 2 ? std::uint8_t((byte & 0x0f) | (nibble << 4)) : std::uint8_t((byte & 0xf0) | nibble);
    }
}

void dequantize_row(SlotType type, const std::uint8_t* row, float scale, std::int64_t n, float* out) {
    std::fill(out, out + n, 0.0f);
    switch (type) {
        case SlotType::f32: add_row<SlotType::f32>(out, 1.0f, row, n); return;
        case SlotType::bf16: add_row<SlotType::bf16>(out, 1.0f, row, n); return;
        case SlotType::q8: add_row<SlotType::q8>(out, scale, row, n); return;
        case SlotType::q4: add_row<SlotType::q4>(out, scale, row, n); return;
    }
}

}  // namespace heads
