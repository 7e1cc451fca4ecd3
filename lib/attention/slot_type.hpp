#pragma once
// How a KV cache stores one key or one value (a row of head_dim numbers):
// the one place that defines slot types, their size, and how they are
// quantized and read back.
//   f32   4 bytes a number, exact
//   bf16  2 bytes a number (round to nearest even), no scale
//   q8    1 byte a number: int8 q in [-127, 127], x ≈ q·scale, scale = max|x| / 127
//   q4    half a byte a number: int4 q in [-7, 7] stored as q + 8, two to a
//         byte (element 2j in the low nibble of byte j), scale = max|x| / 7
// q8 and q4 keep one f32 scale per row (per slot, for its key and for its
// value); rounding to the nearest step leaves |x - q·scale| <= scale / 2.
// Attention reads the rows as they are stored: dot_row, add_row and
// add_four_rows widen them in registers, nothing is copied back into f32.
// Their q8 and q4 loops ask for 16 numbers at a time (a register of floats;
// q4: 8 bytes): left to itself, GCC sizes the vectors by the byte type (64
// lanes) and head sizes below 64 run scalar. f32 and bf16 rows of a
// multiple of 16 numbers go through Lanes instead: an `omp simd` sum ends in
// 16 dependent scalar adds per slot, which made a decode step's attention
// over a long cache four times slower than reading the cache.

#include <cstdint>
#include <cstring>
#include <optional>
#include <string_view>

#include "tensor/dtype.hpp"

namespace heads {

enum class SlotType { f32, bf16, q8, q4 };

std::string_view slot_type_name(SlotType type);  // "f32", "bf16", "q8", "q4"
std::optional<SlotType> slot_type_from_name(std::string_view name);
// Whether each row carries a scale (q8, q4).
inline bool slot_type_scaled(SlotType type) { return type == SlotType::q8 || type == SlotType::q4; }
// Bytes of one row of head_dim numbers, its scale not counted (inline: attention asks per slot).
constexpr std::int64_t slot_row_bytes(SlotType type, std::int64_t head_dim) {
    switch (type) {
        case SlotType::f32: return 4 * head_dim;
        case SlotType::bf16: return 2 * head_dim;
        case SlotType::q8: return head_dim;
        case SlotType::q4: return (head_dim + 1) / 2;
    }
    return 0;
}
// Bytes one slot takes: its key and value rows, their scales and its position.
std::int64_t slot_bytes(SlotType type, std::int64_t head_dim);

// Stores x[0..n) as one row of `type` at `row`; `scale` gets the row's scale (1 when unscaled).
void quantize_row(SlotType type, const float* x, std::int64_t n, std::uint8_t* row, float& scale);
// Reads one row back into out[0..n).
void dequantize_row(SlotType type, const std::uint8_t* row, float scale, std::int64_t n, float* out);

namespace slot_lanes {

// 16 floats: one AVX-512 register, two AVX2 ones. The helpers are inline and
// never cross an ABI boundary, so GCC's note that passing such vectors by
// value depends on the ISA does not apply.
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wpsabi"
using Lanes = float __attribute__((vector_size(64)));
using WideBits = std::uint32_t __attribute__((vector_size(64)));
using HalfBits = std::uint16_t __attribute__((vector_size(32)));
constexpr std::int64_t kLanes = 16;

template <SlotType T> inline Lanes load(const std::uint8_t* row, std::int64_t d) {
    Lanes lanes;
    if constexpr (T == SlotType::f32) {
        std::memcpy(&lanes, row + 4 * d, sizeof lanes);
    } else {
        HalfBits half;
        std::memcpy(&half, row + 2 * d, sizeof half);
        const WideBits wide = __builtin_convertvector(half, WideBits) << 16;  // bf16 is the top half of an f32
        std::memcpy(&lanes, &wide, sizeof lanes);
    }
    return lanes;
}

inline Lanes load(const float* x) {
    Lanes lanes;
    std::memcpy(&lanes, x, sizeof lanes);
    return lanes;
}

inline void store(float* x, Lanes lanes) { std::memcpy(x, &lanes, sizeof lanes); }

// The sum of the 16 lanes, as a tree of four adds.
inline float sum(Lanes v) {
    v += __builtin_shufflevector(v, v, 8, 9, 10, 11, 12, 13, 14, 15, 0, 1, 2, 3, 4, 5, 6, 7);
    v += __builtin_shufflevector(v, v, 4, 5, 6, 7, 0, 1, 2, 3, 12, 13, 14, 15, 8, 9, 10, 11);
    v += __builtin_shufflevector(v, v, 2, 3, 0, 1, 6, 7, 4, 5, 10, 11, 8, 9, 14, 15, 12, 13);
    v += __builtin_shufflevector(v, v, 1, 0, 3, 2, 5, 4, 7, 6, 9, 8, 11, 10, 13, 12, 15, 14);
    return v[0];
}
#pragma GCC diagnostic pop

template <SlotType T> constexpr bool fits(std::int64_t n) {
    return (T == SlotType::f32 || T == SlotType::bf16) && n % kLanes == 0;
}

}  // namespace slot_lanes

// The kernels attention runs on a stored row, the row's scale left to the
// caller: q · row, and out += a · row.
template <SlotType T> inline float dot_row(const float* q, const std::uint8_t* row, std::int64_t n) {
    if (slot_lanes::fits<T>(n)) {
        slot_lanes::Lanes dot = {};
        for (std::int64_t d = 0; d < n; d += slot_lanes::kLanes) dot += slot_lanes::load(q + d) * slot_lanes::load<T>(row, d);
        return slot_lanes::sum(dot);
    }
    float dot = 0;
    if constexpr (T == SlotType::f32) {
        const auto* x = reinterpret_cast<const float*>(row);
#pragma omp simd reduction(+ : dot)
        for (std::int64_t d = 0; d < n; ++d) dot += q[d] * x[d];
    } else if constexpr (T == SlotType::bf16) {
        const auto* x = reinterpret_cast<const std::uint16_t*>(row);
#pragma omp simd reduction(+ : dot)
        for (std::int64_t d = 0; d < n; ++d) dot += q[d] * bf16_to_f32(x[d]);
    } else if constexpr (T == SlotType::q8) {
        const auto* x = reinterpret_cast<const std::int8_t*>(row);
#pragma omp simd simdlen(16) reduction(+ : dot)
        for (std::int64_t d = 0; d < n; ++d) dot += q[d] * float(x[d]);
    } else {
#pragma omp simd simdlen(8) reduction(+ : dot)
        for (std::int64_t j = 0; j < n / 2; ++j)
            dot += q[2 * j] * float(int(row[j] & 15) - 8) + q[2 * j + 1] * float(int(row[j] >> 4) - 8);
        if (n % 2) dot += q[n - 1] * float(int(row[n / 2] & 15) - 8);
    }
    return dot;
}

template <SlotType T> inline void add_row(float* out, float a, const std::uint8_t* row, std::int64_t n) {
    if constexpr (T == SlotType::f32) {
        const auto* x = reinterpret_cast<const float*>(row);
#pragma omp simd
        for (std::int64_t d = 0; d < n; ++d) out[d] += a * x[d];
    } else if constexpr (T == SlotType::bf16) {
        const auto* x = reinterpret_cast<const std::uint16_t*>(row);
#pragma omp simd
        for (std::int64_t d = 0; d < n; ++d) out[d] += a * bf16_to_f32(x[d]);
    } else if constexpr (T == SlotType::q8) {
        const auto* x = reinterpret_cast<const std::int8_t*>(row);
#pragma omp simd simdlen(16)
        for (std::int64_t d = 0; d < n; ++d) out[d] += a * float(x[d]);
    } else {
#pragma omp simd simdlen(8)
        for (std::int64_t j = 0; j < n / 2; ++j) {
            out[2 * j] += a * float(int(row[j] & 15) - 8);
            out[2 * j + 1] += a * float(int(row[j] >> 4) - 8);
        }
        if (n % 2) out[n - 1] += a * float(int(row[n / 2] & 15) - 8);
    }
}

// out += a[0]·row 0 + ... + a[3]·row 3, rows `stride` bytes apart. One load
// and store of `out` for four rows: row by row, each row's adds wait for the
// last row's store.
template <SlotType T>
inline void add_four_rows(float* out, const float* a, const std::uint8_t* rows, std::int64_t stride, std::int64_t n) {
    if (!slot_lanes::fits<T>(n)) {
        for (int r = 0; r < 4; ++r) add_row<T>(out, a[r], rows + r * stride, n);
        return;
    }
    for (std::int64_t d = 0; d < n; d += slot_lanes::kLanes) {
        const slot_lanes::Lanes sum = (a[0] * slot_lanes::load<T>(rows, d) + a[1] * slot_lanes::load<T>(rows + stride, d)) +
                                      (a[2] * slot_lanes::load<T>(rows + 2 * stride, d) + a[3] * slot_lanes::load<T>(rows + 3 * stride, d));
        slot_lanes::store(out + d, slot_lanes::load(out + d) + sum);
    }
}

}  // namespace heads
