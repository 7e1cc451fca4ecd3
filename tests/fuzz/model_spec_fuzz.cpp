// libFuzzer target: arbitrary bytes as tokenizer.model, as far as heads
// reads it itself (parse_model_spec: the protobuf fields that say how a model
// tokenizes; sentencepiece reads the rest). A hostile input may only ever
// raise heads::Error "malformed model: ..."; what parses, written back as
// protobuf, parses to the same spec.

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

#include "fuzz_check.hpp"
#include "tensor/error.hpp"
#include "tokenizer/model_spec.hpp"

namespace {

using heads::fuzz::check;

void varint(std::string& out, std::uint64_t value) {
    for (; value >= 0x80; value >>= 7) out += char(0x80 | (value & 0x7f));
    out += char(value);
}
void field(std::string& out, std::uint32_t number, std::uint64_t value) {
    varint(out, std::uint64_t(number) << 3);
    varint(out, value);
}
void field(std::string& out, std::uint32_t number, std::string_view bytes) {
    varint(out, (std::uint64_t(number) << 3) | 2);
    varint(out, bytes.size());
    out += bytes;
}

std::string serialize(const heads::ModelSpec& spec) {
    std::string out, trainer, normalizer;
    for (const auto& piece : spec.pieces) {
        std::string p;
        field(p, 1, piece.text);
        field(p, 3, std::uint64_t(piece.type));
        field(out, 1, p);
    }
    field(trainer, 3, std::uint64_t(spec.type));
    field(trainer, 22, spec.split_by_whitespace);
    field(trainer, 24, spec.treat_whitespace_as_suffix);
    field(trainer, 35, spec.byte_fallback);
    field(out, 2, trainer);
    field(normalizer, 1, spec.normalizer_name);
    if (spec.has_charsmap) field(normalizer, 2, std::string_view("x"));
    field(normalizer, 3, spec.add_dummy_prefix);
    field(normalizer, 4, spec.remove_extra_whitespaces);
    field(normalizer, 5, spec.escape_whitespaces);
    field(out, 3, normalizer);
    return out;
}

bool same(const heads::ModelSpec& a, const heads::ModelSpec& b) {
    if (a.pieces.size() != b.pieces.size()) return false;
    for (std::size_t i = 0; i < a.pieces.size(); ++i)
        if (a.pieces[i].text != b.pieces[i].text || a.pieces[i].type != b.pieces[i].type) return false;
    return a.type == b.type && a.split_by_whitespace == b.split_by_whitespace &&
           a.treat_whitespace_as_suffix == b.treat_whitespace_as_suffix && a.byte_fallback == b.byte_fallback &&
           a.normalizer_name == b.normalizer_name && a.has_charsmap == b.has_charsmap &&
           a.add_dummy_prefix == b.add_dummy_prefix && a.remove_extra_whitespaces == b.remove_extra_whitespaces &&
           a.escape_whitespaces == b.escape_whitespaces;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    const std::string_view bytes(reinterpret_cast<const char*>(data), size);
    heads::ModelSpec spec;
    try {
        spec = heads::parse_model_spec(bytes);
    } catch (const heads::Error& error) {
        check(std::string_view(error.what()).starts_with("malformed model: "), "an error not saying the model is malformed");
        return 0;
    }
    check(same(spec, heads::parse_model_spec(serialize(spec))), "the spec written back parses to another spec");
    return 0;
}
