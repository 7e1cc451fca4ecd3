// lib/ops against plain loops: matmul in every layout oneDNN picks, RMSNorm, RoPE, SwiGLU, softmax; the work pool.
#include <doctest/doctest.h>

#include <atomic>
#include <cmath>
#include <numbers>
#include <random>
#include <vector>

#include "ops/activation.hpp"
#include "ops/fast_exp.hpp"
#include "ops/matmul.hpp"
#include "ops/norm.hpp"
#include "ops/rope.hpp"
#include "ops/work_pool.hpp"
#include "tensor/error.hpp"

using namespace heads;

namespace {

std::vector<float> random_values(std::size_t n, unsigned seed, float scale = 1.0f) {
    std::mt19937 rng(seed);
    std::normal_distribution<float> dist(0.0f, scale);
    std::vector<float> v(n);
    for (auto& x : v) x = dist(rng);
    return v;
}

Tensor tensor_f32(const std::vector<float>& values, Shape shape) {
    return Tensor::copy_of(DType::F32, std::move(shape), std::as_bytes(std::span(values)));
}

Tensor tensor_bf16(const std::vector<float>& values, Shape shape) {
    std::vector<std::uint16_t> bits(values.size());
    for (std::size_t i = 0; i < values.size(); ++i) bits[i] = f32_to_bf16(values[i]);
    return Tensor::copy_of(DType::BF16, std::move(shape), std::as_bytes(std::span(bits)));
}

// Every format this CPU can multiply in, for f32 weights (bf16 = false) or bf16 ones.
std::vector<WeightFormat> formats_here(bool bf16) {
    std::vector<WeightFormat> formats = {WeightFormat::onednn_f32};
    if (row_gemv_supported()) formats.push_back(bf16 ? WeightFormat::rows_bf16 : WeightFormat::rows_f32);
    return formats;
}

}  // namespace

TEST_CASE("the weight format follows the CPU") {
    Context ctx(1);
    CHECK(weight_format(ctx, ComputeType::f32) == (row_gemv_supported() ? WeightFormat::rows_f32 : WeightFormat::onednn_f32));
    CHECK(weight_format(ctx, ComputeType::bf16) == (row_gemv_supported() ? WeightFormat::rows_bf16 : WeightFormat::onednn_f32));
    // bf16 arithmetic needs both of its kernels: oneDNN's bf16 matmul and the vdpbf16ps GEMV.
    CHECK(ctx.bf16_arithmetic() == (ctx.has_bf16_matmul() && row_gemv_bf16_supported()));
}

TEST_CASE("matmul equals a plain loop for decode and prefill shapes, with accumulation, in every format") {
    Context ctx(1);
    for (const WeightFormat format : formats_here(false)) {
        for (auto [rows, in, out] : {std::tuple{1L, 64L, 48L}, {5L, 32L, 100L}, {17L, 80L, 33L}, {40L, 128L, 256L}}) {
            CAPTURE(format_name(format));
            CAPTURE(rows);
            CAPTURE(in);
            CAPTURE(out);
            const auto w1 = random_values(std::size_t(out / 2 * in), 1);
            const auto w2 = random_values(std::size_t((out - out / 2) * in), 2);
            const Tensor parts[] = {tensor_f32(w1, {out / 2, in}), tensor_f32(w2, {out - out / 2, in})};
            const PackedMatrix w = pack_matrix(ctx, parts, format);
            CHECK(packing_copies(parts, format) == !is_rows(format));
            if (w.rows()) CHECK(w.rows()->parts()[1].bytes().data() == parts[1].bytes().data());  // views, no copy
            CHECK(w.in() == in);
            CHECK(w.out() == out);
            const std::int64_t padded = padded_rows(rows);
            auto x = random_values(std::size_t(padded * in), 3);
            std::vector<float> y(std::size_t(padded * out), 0.5f);
            matmul(ctx, {y.data(), x.data(), rows, true}, w);
            double worst = 0.0;
            for (std::int64_t r = 0; r < rows; ++r)
                for (std::int64_t o = 0; o < out; ++o) {
                    const float* wrow = o < out / 2 ? &w1[std::size_t(o * in)] : &w2[std::size_t((o - out / 2) * in)];
                    double expect = 0.5;
                    for (std::int64_t k = 0; k < in; ++k) expect += double(x[std::size_t(r * in + k)]) * wrow[k];
                    worst = std::max(worst, std::abs(expect - y[std::size_t(r * out + o)]));
                }
            CHECK(worst < 1e-4 * std::sqrt(double(in)));
            // A second call (reusing the cached primitive, for oneDNN layouts) overwrites.
            const std::size_t cached = ctx.matmul_cache_size();
            std::vector<float> y2(y.size(), 7.0f);
            matmul(ctx, {y2.data(), x.data(), rows}, w);
            const std::size_t added = is_rows(format) ? 0 : 1;  // the non-accumulating primitive is its own entry
            CHECK(ctx.matmul_cache_size() == cached + added);
            matmul(ctx, {y2.data(), x.data(), rows}, w);
            CHECK(ctx.matmul_cache_size() == cached + added);
            for (std::int64_t r = 0; r < rows; ++r)
                for (std::int64_t o = 0; o < out; ++o)
                    CHECK(std::abs(y2[std::size_t(r * out + o)] + 0.5f - y[std::size_t(r * out + o)]) < 1e-4f);
        }
    }
}

TEST_CASE("bf16 weights in every format: the file's rows (bf16 arithmetic where the CPU has it), f32") {
    Context ctx(1);
    const std::int64_t in = 64, out = 40;
    const auto w = random_values(std::size_t(in * out), 4);
    const Tensor part = tensor_bf16(w, {out, in});
    for (const WeightFormat format : formats_here(true)) {
        CAPTURE(format_name(format));
        const PackedMatrix packed = pack_matrix(ctx, std::span(&part, 1), format);
        CHECK(packed.compute() == compute_of(format));
        CHECK((packed.rows() != nullptr) == is_rows(format));
        if (packed.rows()) CHECK(packed.rows()->parts()[0].bytes().data() == part.bytes().data());  // no copy
        const auto wf = part.to_f32();
        for (std::int64_t rows : {1L, 3L, 8L, 9L, 20L}) {  // the GEMV and the panel path
            CAPTURE(rows);
            const auto x = random_values(std::size_t(padded_rows(rows) * in), 5);
            std::vector<float> y(std::size_t(padded_rows(rows) * out));
            matmul(ctx, {y.data(), x.data(), rows}, packed);
            // bf16 activations lose ~3 significant digits; f32 activations are exact to float rounding.
            const double tolerance = format == WeightFormat::rows_bf16 && ctx.bf16_arithmetic() ? 3e-2 : 1e-4;
            for (std::int64_t r = 0; r < rows; ++r)
                for (std::int64_t o = 0; o < out; ++o) {
                    double expect = 0.0;
                    for (std::int64_t k = 0; k < in; ++k) expect += double(x[std::size_t(r * in + k)]) * wf[std::size_t(o * in + k)];
                    CHECK(std::abs(expect - y[std::size_t(r * out + o)]) < tolerance * std::sqrt(double(in)));
                }
        }
    }
}

TEST_CASE("f16 weights: read as they are by f32 arithmetic on rows, converted for every other format") {
    Context ctx(1);
    std::vector<std::uint16_t> bits = {f32_to_f16(1.0f), f32_to_f16(-2.0f), f32_to_f16(0.5f), f32_to_f16(3.0f)};
    const Tensor part = Tensor::copy_of(DType::F16, {2, 2}, std::as_bytes(std::span(bits)));
    for (const bool bf16 : {false, true})
        for (const WeightFormat format : formats_here(bf16)) {
            CAPTURE(format_name(format));
            const bool in_place = format == WeightFormat::rows_f32;
            CHECK(packing_copies(std::span(&part, 1), format) == !in_place);
            const PackedMatrix packed = pack_matrix(ctx, std::span(&part, 1), format);
            if (in_place) CHECK(packed.rows()->parts()[0].bytes().data() == part.bytes().data());
            if (packed.rows()) CHECK(packed.rows()->dtype() == (in_place ? DType::F16 : DType::BF16));
            const float x[2] = {2.0f, 1.0f};
            float y[2];
            matmul(ctx, {y, x, 1}, packed);
            CHECK(y[0] == doctest::Approx(0.0));
            CHECK(y[1] == doctest::Approx(4.0));
        }
}

TEST_CASE("made_from: a packed matrix holds its own parts' values in every format and layout, not another's") {
    Context ctx(1);
    // Shapes of one element, one row, and several of oneDNN's blocks each way; parts of f32, bf16 and f16.
    for (auto [in, outs] : {std::pair{48L, std::vector<std::int64_t>{200, 72}}, {1L, {1}}, {37L, {1, 5}}}) {
        for (const DType dtype : {DType::F32, DType::BF16, DType::F16}) {
            std::vector<Tensor> mine, other, fewer;
            unsigned seed = 10;
            for (const std::int64_t out : outs) {
                const auto a = random_values(std::size_t(in * out), seed++), b = random_values(std::size_t(in * out), seed++);
                const auto as = [&](const std::vector<float>& v) {
                    if (dtype == DType::BF16) return tensor_bf16(v, {out, in});
                    if (dtype == DType::F32) return tensor_f32(v, {out, in});
                    std::vector<std::uint16_t> bits(v.size());
                    for (std::size_t i = 0; i < v.size(); ++i) bits[i] = f32_to_f16(v[i]);
                    return Tensor::copy_of(DType::F16, {out, in}, std::as_bytes(std::span(bits)));
                };
                mine.push_back(as(a));
                other.push_back(as(b));
            }
            fewer.assign(mine.begin(), mine.end() - 1);
            for (const bool bf16 : {false, true})
                for (const WeightFormat format : formats_here(bf16)) {
                    INFO(in, " x ", outs.size(), " parts, ", std::string(dtype_name(dtype)), ", ", std::string(format_name(format)));
                    const PackedMatrix packed = pack_matrix(ctx, mine, format);
                    CHECK(made_from(packed, mine));
                    CHECK_FALSE(made_from(packed, other));
                    if (!fewer.empty()) CHECK_FALSE(made_from(packed, fewer));
                }
        }
    }
}

TEST_CASE("the work pool runs every item exactly once, loop after loop, with thread numbers in range") {
    for (int threads : {1, 2, 3, 8}) {  // 8: more threads than this machine's cores
        CAPTURE(threads);
        WorkPool pool(threads);
        CHECK(pool.threads() == threads);
        for (std::int64_t items : {0L, 1L, 2L, 7L, 1000L}) {
            std::vector<std::atomic<int>> calls(static_cast<std::size_t>(items));
            std::atomic<bool> thread_in_range = true;
            for (int loop = 0; loop < 200; ++loop)
                pool.run(items, [&](std::int64_t item, int thread) {
                    calls[std::size_t(item)].fetch_add(1);
                    if (thread < 0 || thread >= threads) thread_in_range = false;
                });
            bool each_200 = true;
            for (const auto& count : calls) each_200 = each_200 && count.load() == 200;
            CHECK(each_200);
            CHECK(thread_in_range);
        }
    }
}

TEST_CASE("rms_norm") {
    const std::int64_t rows = 3, d = 37;
    const auto x = random_values(std::size_t(rows * d), 6);
    const auto w = random_values(std::size_t(d), 7);
    std::vector<float> y(x.size());
    rms_norm({y.data(), x.data(), w.data(), rows, d, 1e-5f});
    for (std::int64_t r = 0; r < rows; ++r) {
        double ms = 0.0;
        for (std::int64_t i = 0; i < d; ++i) ms += double(x[std::size_t(r * d + i)]) * x[std::size_t(r * d + i)];
        const double scale = 1.0 / std::sqrt(ms / double(d) + 1e-5);
        for (std::int64_t i = 0; i < d; ++i)
            CHECK(y[std::size_t(r * d + i)] == doctest::Approx(x[std::size_t(r * d + i)] * scale * w[std::size_t(i)]).epsilon(1e-5));
    }
}

TEST_CASE("rope rotates halves by position · inv_freq, and keeps norms") {
    Rope rope{8, 10000.0, 512, {}};
    std::vector<double> inv(4);
    rope_inv_freq(inv, rope, 10);
    for (int i = 0; i < 4; ++i) CHECK(inv[std::size_t(i)] == doctest::Approx(std::pow(10000.0, -2.0 * i / 8)));
    const std::int32_t positions[] = {0, 3, 100};
    std::vector<float> cos(12), sin(12);
    rope_tables(cos.data(), sin.data(), positions, inv);
    const auto original = random_values(3 * 2 * 8, 8);  // 3 rows, 2 heads, head_dim 8, row stride 20
    std::vector<float> x(3 * 20);
    for (int r = 0; r < 3; ++r)
        for (int j = 0; j < 16; ++j) x[std::size_t(r * 20 + j)] = original[std::size_t(r * 16 + j)];
    rope_apply({x.data(), 3, 20, 2, 8, cos.data(), sin.data()});
    for (int r = 0; r < 3; ++r)
        for (int h = 0; h < 2; ++h)
            for (int i = 0; i < 4; ++i) {
                const double angle = positions[r] * inv[std::size_t(i)];
                const double a = original[std::size_t(r * 16 + h * 8 + i)], b = original[std::size_t(r * 16 + h * 8 + i + 4)];
                CHECK(x[std::size_t(r * 20 + h * 8 + i)] == doctest::Approx(a * std::cos(angle) - b * std::sin(angle)).epsilon(1e-5));
                CHECK(x[std::size_t(r * 20 + h * 8 + i + 4)] == doctest::Approx(b * std::cos(angle) + a * std::sin(angle)).epsilon(1e-5));
            }
}

TEST_CASE("rope scaling variants follow transformers") {
    Rope rope{64, 500000.0, 8192, {}};
    std::vector<double> plain(32), scaled(32);
    rope_inv_freq(plain, rope, 1);

    rope.scaling = {RopeScalingType::linear, 4.0};
    rope_inv_freq(scaled, rope, 1);
    for (int i = 0; i < 32; ++i) CHECK(scaled[std::size_t(i)] == doctest::Approx(plain[std::size_t(i)] / 4.0));

    rope.scaling = {RopeScalingType::llama3, 8.0, 1.0, 4.0, 8192};
    rope_inv_freq(scaled, rope, 1);
    for (int i = 0; i < 32; ++i) {
        const double wavelen = 2 * std::numbers::pi / plain[std::size_t(i)];
        if (wavelen < 8192 / 4.0) CHECK(scaled[std::size_t(i)] == plain[std::size_t(i)]);   // high frequencies kept
        if (wavelen > 8192 / 1.0) CHECK(scaled[std::size_t(i)] == doctest::Approx(plain[std::size_t(i)] / 8.0));  // low scaled
    }

    rope.scaling = {RopeScalingType::dynamic, 2.0};
    rope_inv_freq(scaled, rope, 8192);  // within the trained length: unchanged
    for (int i = 0; i < 32; ++i) CHECK(scaled[std::size_t(i)] == doctest::Approx(plain[std::size_t(i)]));
    rope_inv_freq(scaled, rope, 16384);  // base · (2·2 − 1)^(64/62)
    const double base = 500000.0 * std::pow(3.0, 64.0 / 62.0);
    for (int i = 0; i < 32; ++i) CHECK(scaled[std::size_t(i)] == doctest::Approx(std::pow(base, -2.0 * i / 64)));
}

TEST_CASE("swiglu, softmax, log-softmax and argmax") {
    const float gate_up[] = {1.0f, -2.0f, 3.0f, 0.5f};  // one row, d_ff 2
    float y[2];
    swiglu(y, gate_up, 1, 2);
    CHECK(y[0] == doctest::Approx(1.0 / (1 + std::exp(-1.0)) * 3.0));
    CHECK(y[1] == doctest::Approx(-2.0 / (1 + std::exp(2.0)) * 0.5));
    std::vector<float> row{1.0f, 2.0f, 3.0f}, logs = row;
    softmax(row, row);  // in place
    log_softmax(logs, logs);
    const double z = std::exp(1.0) + std::exp(2.0) + std::exp(3.0);
    for (int i = 0; i < 3; ++i) {
        CHECK(row[std::size_t(i)] == doctest::Approx(std::exp(i + 1.0) / z));
        CHECK(logs[std::size_t(i)] == doctest::Approx(i + 1.0 - std::log(z)));
    }

    // A token a sampling step removed (-inf) has probability 0 and log-probability -inf.
    const std::vector<float> logits{1, 2, -INFINITY, 2};
    std::vector<float> probs(4), logp(4);
    softmax(probs, logits);
    const double e = std::exp(1.0);
    CHECK(probs[0] == doctest::Approx(1 / (1 + 2 * e)));
    CHECK(probs[1] == doctest::Approx(e / (1 + 2 * e)));
    CHECK(probs[2] == 0);
    log_softmax(logp, logits);
    CHECK(logp[3] == doctest::Approx(std::log(e / (1 + 2 * e))));
    CHECK(logp[2] == -INFINITY);
    CHECK(argmax(logits) == 1);  // 1 and 3 tie: the lowest index
    // A row with nothing left is an error for both, not NaN.
    const std::vector<float> none{-INFINITY, -INFINITY};
    CHECK_THROWS_WITH_AS(softmax(probs, none), "every token was removed from the distribution", Error);
    CHECK_THROWS_WITH_AS(log_softmax(logp, none), "every token was removed from the distribution", Error);
}

TEST_CASE("fast_exp is within 3e-7 of exp and 0 for -inf") {
    double worst = 0;
    for (float x = -87.0f; x < 88.0f; x += 0.0137f) worst = std::max(worst, std::abs(double(fast_exp(x)) / std::exp(double(x)) - 1.0));
    CHECK(worst < 3e-7);
    CHECK(fast_exp(-INFINITY) == 0.0f);
    CHECK(fast_exp(-100.0f) == 0.0f);
    CHECK(fast_exp(0.0f) == 1.0f);
}
