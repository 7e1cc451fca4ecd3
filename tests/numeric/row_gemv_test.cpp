// row_gemv() and the panel path of matmul() over RowMatrix weights, against a
// plain double-precision loop over the same bf16, f16 or f32 values: shapes with
// odd sizes and tails on every axis (in % 8, out % 4, parts of odd heights,
// 1..8 rows), accumulation, strided y, and bit-identical results for any
// thread count. The same for bf16 arithmetic (vdpbf16ps GEMV, oneDNN's bf16
// GEMM over the rows) against the loop over x rounded to bf16, where the CPU
// has it: in % 32, out across blocks.
#include <doctest/doctest.h>

#include <cmath>
#include <cstdint>
#include <memory>
#include <random>
#include <vector>

#include "ops/matmul.hpp"
#include "ops/row_gemv.hpp"

using namespace heads;

namespace {

std::vector<float> random_values(std::size_t n, unsigned seed) {
    std::mt19937 rng(seed);
    std::normal_distribution<float> dist(0.0f, 1.0f);
    std::vector<float> v(n);
    for (auto& x : v) x = dist(rng);
    return v;
}

Tensor random_part(DType dtype, std::int64_t rows, std::int64_t in, unsigned seed) {
    const auto values = random_values(std::size_t(rows * in), seed);
    if (dtype == DType::F32) return Tensor::copy_of(DType::F32, {rows, in}, std::as_bytes(std::span(values)));
    std::vector<std::uint16_t> bits(values.size());
    for (std::size_t i = 0; i < values.size(); ++i) bits[i] = dtype == DType::F16 ? f32_to_f16(values[i]) : f32_to_bf16(values[i]);
    return Tensor::copy_of(dtype, {rows, in}, std::as_bytes(std::span(bits)));
}

struct Shape3 {
    std::vector<std::int64_t> part_rows;  // output rows of each part
    std::int64_t in;
};

// y0 + x · Wᵀ in double, W the parts' values.
std::vector<double> reference(const std::vector<Tensor>& parts, const std::vector<float>& x, std::int64_t rows,
                              std::int64_t in, std::int64_t ldy, const std::vector<float>& y0) {
    std::vector<double> y(y0.begin(), y0.end());
    std::int64_t first = 0;
    for (const Tensor& part : parts) {
        const auto w = part.to_f32();
        for (std::int64_t o = 0; o < part.dim(0); ++o)
            for (std::int64_t r = 0; r < rows; ++r) {
                double sum = 0.0;
                for (std::int64_t k = 0; k < in; ++k) sum += double(w[std::size_t(o * in + k)]) * x[std::size_t(r * in + k)];
                y[std::size_t(r * ldy + first + o)] += sum;
            }
        first += part.dim(0);
    }
    return y;
}

}  // namespace

TEST_CASE("row_gemv equals a plain loop over shapes, dtypes, row counts and accumulation") {
    WorkPool pool(2);
    if (!row_gemv_supported()) {
        MESSAGE("skipped: this CPU has no AVX2/FMA/F16C");
        return;
    }
    const Shape3 shapes[] = {{{1}, 1},           {{3}, 7},           {{4}, 8},          {{5}, 9},
                             {{17, 6, 6}, 33},   {{64}, 64},         {{7, 1, 13}, 129}, {{40, 40}, 250},
                             {{96, 32, 32}, 96}, {{258}, 1000}};
    unsigned seed = 1;
    for (DType dtype : {DType::BF16, DType::F16, DType::F32})
        for (const Shape3& shape : shapes) {
            std::vector<Tensor> parts;
            for (std::int64_t rows : shape.part_rows) parts.push_back(random_part(dtype, rows, shape.in, seed++));
            const RowMatrix w(parts);
            const std::int64_t in = shape.in, out = w.out();
            CHECK(w.in() == in);
            for (std::int64_t rows = 1; rows <= kGemvMaxRows; ++rows)
                for (bool accumulate : {false, true}) {
                    CAPTURE(dtype_name(dtype));
                    CAPTURE(in);
                    CAPTURE(out);
                    CAPTURE(rows);
                    CAPTURE(accumulate);
                    const std::int64_t ldy = out + 3;  // strided y: the gap must stay untouched
                    const auto x = random_values(std::size_t(rows * in), seed++);
                    std::vector<float> y(std::size_t(rows * ldy), 0.0f);
                    if (accumulate) y = random_values(y.size(), seed++);
                    const std::vector<float> y0 = y;
                    row_gemv(pool, {y.data(), ldy, x.data(), in, rows, accumulate}, w);
                    const auto expect = reference(parts, x, rows, in, ldy, accumulate ? y0 : std::vector<float>(y.size()));
                    double worst = 0.0;
                    for (std::int64_t r = 0; r < rows; ++r) {
                        for (std::int64_t o = 0; o < out; ++o) {
                            const std::size_t i = std::size_t(r * ldy + o);
                            worst = std::max(worst, std::abs(expect[i] - y[i]));
                        }
                        for (std::int64_t o = out; o < ldy; ++o) CHECK(y[std::size_t(r * ldy + o)] == y0[std::size_t(r * ldy + o)]);
                    }
                    // f32 sums of `in` products of N(0,1) values: rounding grows like sqrt(in).
                    CHECK(worst <= 1e-5 * std::sqrt(double(in)));
                }
        }
}

TEST_CASE("f32 rows at every offset within a cache line, one row of x: the plain loop, the same bits for any thread count") {
    // Decode over f32 rows reads them from a 32-byte boundary on with x moved
    // to the rows' offset (a scalar head first): every offset a file's tensor
    // can start at, a second part at another offset, x itself at each offset
    // (used as it is where it matches the rows'), rows a whole number of 32
    // bytes long or not (then the plain kernel), in short of, at and past
    // one 32-wide step after the head, with and without accumulation.
    if (!row_gemv_supported()) return;
    for (const std::int64_t in : {8, 20, 32, 40, 64, 200}) {
        const std::int64_t out_a = 37, out_b = 21;
        const auto a_values = random_values(std::size_t(out_a * in), unsigned(in));
        const auto b_values = random_values(std::size_t(out_b * in), unsigned(in) + 1);
        // One buffer whose line-aligned start is known; the parts and x placed at chosen offsets in it.
        std::vector<float> memory(std::size_t((out_a + out_b + 1) * in) + 64);
        float* aligned = reinterpret_cast<float*>((reinterpret_cast<std::uintptr_t>(memory.data()) + 63) & ~std::uintptr_t(63));
        const auto owner = std::make_shared<int>(0);
        for (std::int64_t shift = 0; shift < 16; ++shift) {
            CAPTURE(in);
            CAPTURE(shift);
            float* a_rows = aligned + shift;
            float* b_rows = a_rows + out_a * in + (shift % 3);
            float* x = b_rows + out_b * in + (shift % 5);
            std::copy(a_values.begin(), a_values.end(), a_rows);
            std::copy(b_values.begin(), b_values.end(), b_rows);
            const auto x_values = random_values(std::size_t(in), unsigned(100 + shift));
            std::copy(x_values.begin(), x_values.end(), x);
            const std::vector<Tensor> parts = {
                Tensor::view(DType::F32, {out_a, in}, reinterpret_cast<const std::byte*>(a_rows), owner),
                Tensor::view(DType::F32, {out_b, in}, reinterpret_cast<const std::byte*>(b_rows), owner)};
            const RowMatrix w(parts);
            const bool accumulate = shift % 2 == 1;
            const auto y0 = accumulate ? random_values(std::size_t(w.out()), unsigned(200 + shift)) : std::vector<float>(std::size_t(w.out()));
            std::vector<float> one = y0, two = y0;
            WorkPool pool_1(1), pool_2(2);
            row_gemv(pool_1, {one.data(), w.out(), x, in, 1, accumulate}, w);
            row_gemv(pool_2, {two.data(), w.out(), x, in, 1, accumulate}, w);
            CHECK(one == two);
            const auto expect = reference(parts, x_values, 1, in, w.out(), y0);
            double worst = 0.0;
            for (std::size_t o = 0; o < one.size(); ++o) worst = std::max(worst, std::abs(expect[o] - one[o]));
            CHECK(worst <= 1e-5 * std::sqrt(double(in)));
        }
    }
}

TEST_CASE("row_gemv gives the same bits for any thread count") {
    if (!row_gemv_supported()) return;
    const std::int64_t in = 301, rows = 3;
    const RowMatrix w({random_part(DType::BF16, 203, in, 7), random_part(DType::BF16, 50, in, 8)});
    const auto x = random_values(std::size_t(rows * in), 9);
    std::vector<float> one(std::size_t(rows * w.out())), two(one.size()), three(one.size());
    WorkPool pool_1(1), pool_2(2), pool_3(3);
    row_gemv(pool_1, {one.data(), w.out(), x.data(), in, rows}, w);
    row_gemv(pool_2, {two.data(), w.out(), x.data(), in, rows}, w);
    row_gemv(pool_3, {three.data(), w.out(), x.data(), in, rows}, w);
    CHECK(one == two);
    CHECK(one == three);
}

TEST_CASE("matmul over bf16, f16 and f32 rows: the GEMV and the GEMM path equal the plain loop") {
    if (!row_gemv_supported()) return;
    Context ctx(1);
    for (DType dtype : {DType::BF16, DType::F16, DType::F32}) {
        for (auto [in, out_a, out_b] : {std::tuple{33L, 17L, 6L}, {200L, 64L, 9L}, {1024L, 2100L, 7L}}) {
            const std::vector<Tensor> parts = {random_part(dtype, out_a, in, 11), random_part(dtype, out_b, in, 12)};
            const PackedMatrix w(RowMatrix{parts}, ComputeType::f32);
            for (std::int64_t rows : {1L, 8L, 9L, 37L}) {
                CAPTURE(dtype_name(dtype));
                CAPTURE(in);
                CAPTURE(rows);
                const std::int64_t out = w.out();
                const auto x = random_values(std::size_t(padded_rows(rows) * in), 13);
                std::vector<float> y = random_values(std::size_t(padded_rows(rows) * out), 14);
                const std::vector<float> y0 = y;
                matmul(ctx, {y.data(), x.data(), rows, true}, w);
                const auto expect = reference(parts, x, rows, in, out, y0);
                double worst = 0.0;
                for (std::int64_t i = 0; i < rows * out; ++i) worst = std::max(worst, std::abs(expect[std::size_t(i)] - y[std::size_t(i)]));
                CHECK(worst <= 1e-5 * std::sqrt(double(in)));
            }
        }
    }
}

namespace {

// x rounded to bf16 as the engine rounds it (f32_to_bf16, nearest even), back in f32.
std::vector<float> rounded_to_bf16(const std::vector<float>& x) {
    std::vector<float> rounded(x.size());
    for (std::size_t i = 0; i < x.size(); ++i) rounded[i] = bf16_to_f32(f32_to_bf16(x[i]));
    return rounded;
}

// Worst |y - expect| over the bound the f32 sums allow: a sum of n terms in
// f32 is within n u sum |terms| of the exact sum (u = 2^-24, first order); in
// bf16 arithmetic the products are exact, so any excess is the kernel's.
// `depth`: the additions on the longest path to an output.
double worst_over_bound(const std::vector<Tensor>& parts, const std::vector<float>& xr, std::int64_t rows, std::int64_t in,
                        std::int64_t ldy, const std::vector<float>& y0, const std::vector<float>& y, double depth) {
    const std::vector<double> expect = reference(parts, xr, rows, in, ldy, y0);
    std::vector<float> abs_x(xr.size()), zero(y0.size(), 0.0f), abs_y0(y0.size());
    for (std::size_t i = 0; i < xr.size(); ++i) abs_x[i] = std::abs(xr[i]);
    for (std::size_t i = 0; i < y0.size(); ++i) abs_y0[i] = std::abs(y0[i]);
    std::vector<Tensor> abs_parts;
    for (const Tensor& part : parts) {
        auto values = part.to_f32();
        for (float& v : values) v = std::abs(v);
        abs_parts.push_back(Tensor::copy_of(DType::F32, part.shape(), std::as_bytes(std::span(values))));
    }
    const std::vector<double> magnitude = reference(abs_parts, abs_x, rows, in, ldy, abs_y0);
    const std::int64_t out = ldy;
    double worst = 0.0;
    for (std::int64_t r = 0; r < rows; ++r)
        for (std::int64_t o = 0; o < out; ++o) {
            const std::size_t i = std::size_t(r * ldy + o);
            const double bound = depth * std::ldexp(1.0, -24) * magnitude[i] + 1e-30;
            worst = std::max(worst, std::abs(expect[i] - double(y[i])) / bound);
        }
    return worst;
}

}  // namespace

TEST_CASE("row_gemv in bf16 arithmetic equals a loop over x rounded to bf16: in % 32, out across blocks, 1..8 rows") {
    if (!row_gemv_bf16_supported()) {
        MESSAGE("skipped: this CPU has no AVX512-BF16");
        return;
    }
    WorkPool pool(2);
    // in 2048: 64-row blocks (256 KiB / 4 KiB), so 130 + 3 rows end inside blocks.
    const Shape3 shapes[] = {{{1}, 1},        {{3}, 31},          {{4}, 32},         {{5}, 33},
                             {{17, 6, 6}, 95}, {{7, 1, 13}, 129},  {{40, 40}, 250},  {{258}, 1000},
                             {{130, 3}, 2048}, {{70}, 4099}};
    unsigned seed = 101;
    for (const Shape3& shape : shapes) {
        std::vector<Tensor> parts;
        for (std::int64_t rows : shape.part_rows) parts.push_back(random_part(DType::BF16, rows, shape.in, seed++));
        const RowMatrix w(parts);
        const std::int64_t in = shape.in, out = w.out();
        for (std::int64_t rows = 1; rows <= kGemvMaxRows; ++rows)
            for (bool accumulate : {false, true}) {
                CAPTURE(in);
                CAPTURE(out);
                CAPTURE(rows);
                CAPTURE(accumulate);
                const auto x = random_values(std::size_t(rows * in), seed++);
                std::vector<std::uint16_t> x_bf16(x.size());
                round_to_bf16(x_bf16.data(), x.data(), rows, in, in);
                for (std::size_t i = 0; i < x.size(); ++i) REQUIRE(x_bf16[i] == f32_to_bf16(x[i]));
                const std::int64_t ldy = out + 3;  // strided y: the gap must stay untouched
                std::vector<float> y(std::size_t(rows * ldy), 0.0f);
                if (accumulate) y = random_values(y.size(), seed++);
                const std::vector<float> y0 = y;
                row_gemv(pool, {y.data(), ldy, nullptr, in, rows, accumulate, x_bf16.data()}, w);
                for (std::int64_t r = 0; r < rows; ++r)
                    for (std::int64_t o = out; o < ldy; ++o) CHECK(y[std::size_t(r * ldy + o)] == y0[std::size_t(r * ldy + o)]);
                // Per lane about in / 32 steps (two products each), 4 accumulators, 16 lanes, y0: depth in / 16 + 8.
                const std::vector<float> base = accumulate ? y0 : std::vector<float>(y.size());
                CHECK(worst_over_bound(parts, rounded_to_bf16(x), rows, in, ldy, base, y, double(in) / 16 + 8) <= 1.0);
            }
    }
}

TEST_CASE("row_gemv in bf16 arithmetic gives the same bits for any thread count") {
    if (!row_gemv_bf16_supported()) return;
    const std::int64_t in = 1501, rows = 3;  // 87-row blocks: 203 and 150 rows span several
    const RowMatrix w({random_part(DType::BF16, 203, in, 7), random_part(DType::BF16, 150, in, 8)});
    const auto x = random_values(std::size_t(rows * in), 9);
    std::vector<std::uint16_t> x_bf16(x.size());
    round_to_bf16(x_bf16.data(), x.data(), rows, in, in);
    std::vector<float> one(std::size_t(rows * w.out())), two(one.size()), three(one.size());
    WorkPool pool_1(1), pool_2(2), pool_3(3);
    row_gemv(pool_1, {one.data(), w.out(), nullptr, in, rows, false, x_bf16.data()}, w);
    row_gemv(pool_2, {two.data(), w.out(), nullptr, in, rows, false, x_bf16.data()}, w);
    row_gemv(pool_3, {three.data(), w.out(), nullptr, in, rows, false, x_bf16.data()}, w);
    CHECK(one == two);
    CHECK(one == three);
}

TEST_CASE("matmul in bf16 arithmetic over bf16 rows: the GEMV and the GEMM (oneDNN's bf16 one, or its f32 one) equal the loop over rounded x") {
    Context ctx(2);
    if (!ctx.bf16_arithmetic()) {
        MESSAGE("skipped: no bf16 arithmetic on this CPU path");
        return;
    }
    const bool chosen = ctx.bf16_gemm();
    MESSAGE("this CPU's prefill kernels: " << (chosen ? "oneDNN's bf16 matmul" : "oneDNN's f32 matmul over the bf16 values"));
    for (bool bf16_gemm : {true, false}) {
        ctx.set_bf16_gemm(bf16_gemm);
        for (auto [in, out_a, out_b] : {std::tuple{33L, 17L, 6L}, {200L, 64L, 9L}, {1024L, 2100L, 7L}}) {
            const std::vector<Tensor> parts = {random_part(DType::BF16, out_a, in, 21), random_part(DType::BF16, out_b, in, 22)};
            const PackedMatrix w(RowMatrix{parts}, ComputeType::bf16);
            for (std::int64_t rows : {1L, 8L, 9L, 37L}) {
                for (bool accumulate : {false, true}) {
                    CAPTURE(bf16_gemm);
                    CAPTURE(in);
                    CAPTURE(rows);
                    CAPTURE(accumulate);
                    const std::int64_t out = w.out();
                    const auto x = random_values(std::size_t(padded_rows(rows) * in), 23);
                    std::vector<float> y = random_values(std::size_t(padded_rows(rows) * out), 24);
                    const std::vector<float> y0 = y;
                    matmul(ctx, {y.data(), x.data(), rows, accumulate}, w);
                    const std::vector<float> base = accumulate ? y0 : std::vector<float>(y.size());
                    // oneDNN's summation order is its own: bound it by the sequential one, in + 1 additions.
                    CHECK(worst_over_bound(parts, rounded_to_bf16(x), rows, in, out, base, y, double(in) + 1) <= 1.0);
                }
            }
        }
    }
}
