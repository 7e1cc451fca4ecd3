// lib/tensor: dtypes and their conversions, owned tensors and views, reshapes.
#include <cmath>
#include <cstring>
#include <memory>
#include <string>
#include <stdexcept>
#include <vector>

#include <doctest/doctest.h>

#include "tensor/quote.hpp"
#include "tensor/tensor.hpp"

using namespace heads;

TEST_CASE("dtypes: names as safetensors spells them, sizes, floating or not") {
    CHECK(dtype_name(DType::BF16) == "BF16");
    CHECK(dtype_from_name("F16") == DType::F16);
    CHECK_FALSE(dtype_from_name("f32"));
    CHECK(dtype_size(DType::BF16) == 2);
    CHECK(dtype_size(DType::I64) == 8);
    CHECK(is_floating(DType::F16));
    CHECK_FALSE(is_floating(DType::I32));
}

TEST_CASE("bf16 and f16: exact where representable, bf16 rounds to nearest even, NaN stays NaN") {
    for (const float x : {0.0f, 1.0f, -2.5f, 65504.0f, 0.15625f}) {
        CHECK(bf16_to_f32(f32_to_bf16(x)) == doctest::Approx(x).epsilon(1e-2));
        CHECK(f16_to_f32(f32_to_f16(x)) == x);
    }
    CHECK(bf16_to_f32(f32_to_bf16(1.0f)) == 1.0f);
    // 1 + 2^-8 lies halfway between bf16 neighbours 1 and 1 + 2^-7: it goes to the even one, 1.
    CHECK(bf16_to_f32(f32_to_bf16(1.0f + std::ldexp(1.0f, -8))) == 1.0f);
    CHECK(bf16_to_f32(f32_to_bf16(1.0f + 3 * std::ldexp(1.0f, -8))) == 1.0f + std::ldexp(1.0f, -6));
    CHECK(std::isnan(bf16_to_f32(f32_to_bf16(NAN))));
    CHECK(std::isnan(f16_to_f32(f32_to_f16(NAN))));
}

TEST_CASE("tensors: zeros are owned and writable, views read-only, data<T> checks the dtype") {
    Tensor t = Tensor::zeros(DType::F32, {2, 3});
    CHECK(t.numel() == 6);
    CHECK(t.nbytes() == 24);
    CHECK(t.dim(-1) == 3);
    CHECK_THROWS_AS(t.dim(2), std::out_of_range);
    CHECK(t.writable());
    t.mutable_data<float>()[4] = 7;
    CHECK(t.data<float>()[4] == 7);
    CHECK_THROWS_AS(t.data<std::int32_t>(), std::invalid_argument);
    CHECK(shape_string(t.shape()) == "[2, 3]");

    const Tensor r = t.reshaped({3, 2});
    CHECK(r.data<float>()[4] == 7);
    CHECK_THROWS_AS(t.reshaped({4, 2}), std::invalid_argument);

    auto memory = std::make_shared<std::vector<std::uint16_t>>(std::vector<std::uint16_t>{
        f32_to_bf16(1.5f), f32_to_bf16(-2.0f)});
    Tensor view = Tensor::view(DType::BF16, {2}, reinterpret_cast<const std::byte*>(memory->data()), memory);
    CHECK_FALSE(view.writable());
    CHECK_THROWS_AS(view.mutable_bytes(), std::logic_error);
    CHECK(view.to_f32() == std::vector<float>{1.5f, -2.0f});
    CHECK_THROWS_AS(Tensor::zeros(DType::I32, {2}).to_f32(), std::invalid_argument);
    CHECK_THROWS_AS(Tensor::copy_of(DType::F32, {2}, t.bytes()), std::invalid_argument);  // 24 bytes for 8
}

TEST_CASE("quote: input shown whole and readable, or cut with ...") {
    using namespace std::string_literals;
    CHECK(quote("3.x") == "'3.x'");
    CHECK(quote("") == "''");
    // A NUL does not cut the message, a CR does not overwrite it.
    CHECK(quote("1.\0002"s) == "'1.\\x002'");
    CHECK(quote("a\rb\n\t\x7f") == "'a\\x0db\\x0a\\x09\\x7f'");
    // Valid UTF-8 stays; invalid bytes, lone continuations, overlong forms,
    // surrogates and C1 controls are escaped; the backslash is doubled.
    CHECK(quote("t\xc3\xaate \xe2\x96\x81 \xf0\x9f\x98\x80") == "'t\xc3\xaate \xe2\x96\x81 \xf0\x9f\x98\x80'");
    CHECK(quote("\xff\x80x") == "'\\xff\\x80x'");
    CHECK(quote("\xc0\xaf") == "'\\xc0\\xaf'");
    CHECK(quote("\xed\xa0\x80") == "'\\xed\\xa0\\x80'");
    CHECK(quote("\xc2\x85") == "'\\xc2\\x85'");
    CHECK(quote("\xe2\x96") == "'\\xe2\\x96'");
    CHECK(quote("a\\x00") == "'a\\\\x00'");
    // Long text is cut at the limit, on a character boundary.
    CHECK(quote(std::string(48, '9')) == "'" + std::string(48, '9') + "'");
    CHECK(quote(std::string(309, '9')) == "'" + std::string(48, '9') + "...'");
    CHECK(quote("abcdef", 4) == "'abcd...'");
    CHECK(quote("ab\xc3\xaa", 3) == "'ab...'");
    CHECK(quote(std::string(1 << 20, '\0')).size() == 2 + 4 * 48 + 3);
}
