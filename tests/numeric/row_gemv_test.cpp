// row_gemv() and the panel path of matmul() over RowMatrix weights, against a
// plain double-precision loop over the same bf16, f16 or f32 values: shapes with
// odd sizes and tails on every axis (in % 8, out % 4, parts of odd heights,
// 1..8 rows), accumulation, strided y, and bit-identical results for any
// thread count.
#include <doctest/doctest.h>

#include <cmath>
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
            const PackedMatrix w(RowMatrix{parts});
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
