#include <doctest/doctest.h>

#include <cstdio>
#include <cstring>
#include <numeric>

#include "io/output.hpp"
#include "safetensors/header.hpp"
#include "safetensors/keys.hpp"
#include "safetensors/read.hpp"
#include "safetensors/write.hpp"
#include "temp_dir.hpp"
#include "tensor/error.hpp"

using namespace heads;
using heads::test::TempDir;

namespace {

// Everything written to a FILE*, as bytes.
template <class Write> std::string capture(Write&& write) {
    char* buffer = nullptr;
    std::size_t size = 0;
    std::FILE* out = open_memstream(&buffer, &size);
    write(out);
    std::fclose(out);
    std::string bytes(buffer, size);
    std::free(buffer);
    return bytes;
}

template <class T> Tensor iota_tensor(Shape shape, T start = T(0)) {
    Tensor tensor = Tensor::zeros(dtype_of<T>(), std::move(shape));
    auto values = tensor.mutable_data<T>();
    std::iota(values.begin(), values.end(), start);
    return tensor;
}

Frame sample_frame(int seed) {
    Frame frame;
    frame.metadata[std::string(keys::kind)] = std::string(kinds::logits);
    frame.metadata[std::string(keys::tokens)] = fmt::format("1 {} 3", seed);
    frame.add("logits", iota_tensor<float>({2, 3}, float(seed)));
    frame.add("ids", iota_tensor<std::int32_t>({4}, seed));
    frame.add("bytes", iota_tensor<std::uint8_t>({3}));  // 3 bytes: the next tensor starts unaligned
    frame.add("small", iota_tensor<std::int8_t>({2, 2}, std::int8_t(-2)));
    return frame;
}

std::string header_blob(const std::string& json, std::string_view data = {}) {
    std::string out(8, '\0');
    for (int i = 0; i < 8; ++i) out[std::size_t(i)] = char((std::uint64_t(json.size()) >> (8 * i)) & 0xff);
    return out + json + std::string(data);
}

std::string read_error(const std::string& bytes) {
    try {
        read_frame_bytes(std::as_bytes(std::span(bytes)), nullptr, "t");
    } catch (const Error& error) {
        return error.what();
    }
    return "no error";
}

void check_same(const Frame& a, const Frame& b) {
    REQUIRE(a.size() == b.size());
    CHECK(a.metadata == b.metadata);
    for (const auto& [name, tensor] : a) {
        const Tensor& other = b.at(name);
        CHECK(other.dtype() == tensor.dtype());
        CHECK(other.shape() == tensor.shape());
        CHECK(std::memcmp(other.bytes().data(), tensor.bytes().data(), tensor.nbytes()) == 0);
    }
}

}  // namespace

TEST_CASE("a frame keeps tensors in order and finds them by name") {
    Frame frame = sample_frame(7);
    std::vector<std::string> names;
    for (const auto& [name, tensor] : frame) names.push_back(name);
    CHECK(names == std::vector<std::string>{"logits", "ids", "bytes", "small"});
    CHECK(frame.at("ids").data<std::int32_t>()[1] == 8);
    CHECK(frame.find("nope") == nullptr);
    CHECK_THROWS_WITH_AS(frame.at("nope"), "no tensor 'nope' in the frame", Error);
    CHECK_THROWS_WITH_AS(frame.add("ids", Tensor::zeros(DType::F32, {1})), "two tensors named 'ids' in one frame", Error);
    CHECK_THROWS_AS(frame.add("__metadata__", Tensor::zeros(DType::F32, {1})), Error);
    CHECK(frame.meta(keys::kind) == "logits");
    CHECK_THROWS_WITH_AS(frame.meta(keys::policy), "no 'heads.policy' in the frame's __metadata__", Error);
}

TEST_CASE("write then read a frame: every dtype, metadata, unaligned tensors") {
    Frame frame;
    frame.metadata["heads.kind"] = "kv";
    frame.add("u8", iota_tensor<std::uint8_t>({5}));  // 5 bytes: everything after is unaligned in the file
    frame.add("f32", iota_tensor<float>({3, 2}, 0.5f));
    for (DType dtype : {DType::BF16, DType::F16, DType::I8, DType::I32, DType::F64, DType::I64, DType::I16, DType::Bool}) {
        Tensor tensor = Tensor::zeros(dtype, {2, 3});
        auto bytes = tensor.mutable_bytes();
        for (std::size_t i = 0; i < bytes.size(); ++i) bytes[i] = std::byte(i * 7 + 1);
        frame.add(std::string(dtype_name(dtype)), tensor);
    }
    frame.add("empty", Tensor::zeros(DType::F32, {0, 4}));
    frame.add("scalar", iota_tensor<float>({}, 42.0f));
    const std::string bytes = capture([&](std::FILE* out) { write_frame(out, frame); });
    CHECK(read_header_size(reinterpret_cast<const std::byte*>(bytes.data())) % 8 == 0);
    const Frame back = read_frame_bytes(std::as_bytes(std::span(bytes)), nullptr, "mem");
    check_same(frame, back);
    CHECK(back.at("scalar").data<float>()[0] == 42.0f);
    // Read order is data order, which is the order written.
    CHECK(back.begin()->first == "u8");
}

TEST_CASE("a file is read through mmap: tensors are read-only views") {
    TempDir dir;
    const Frame frame = sample_frame(1);
    write_frame_file(dir / "a.safetensors", frame);
    std::string header;
    const Frame back = read_frame_file(dir / "a.safetensors", &header);
    check_same(frame, back);
    CHECK(!back.at("logits").writable());
    CHECK(header.front() == '{');
    CHECK(header.find("\"heads.kind\":\"logits\"") != std::string::npos);
    // The file has no stray temporary beside it.
    CHECK(std::distance(std::filesystem::directory_iterator(dir.path()), {}) == 1);
}

TEST_CASE("a missing file, a directory, an empty file") {
    TempDir dir;
    CHECK_THROWS_WITH_AS(read_frame_file(dir / "none"), doctest::Contains("No such file or directory"), Error);
    CHECK_THROWS_WITH_AS(read_frame_file(dir.path()), doctest::Contains("Is a directory"), Error);
    heads::test::write_file(dir / "empty", "");
    CHECK_THROWS_WITH_AS(read_frame_file(dir / "empty"), doctest::Contains("too short"), Error);
}

TEST_CASE("FrameWriter streams tensor bytes in pieces and counts them") {
    const std::vector<TensorSpec> specs{{"a", DType::F32, {2, 2}}, {"b", DType::I32, {3}}};
    const std::vector<float> a{1, 2, 3, 4};
    const std::vector<std::int32_t> b{5, 6, 7};
    const std::string bytes = capture([&](std::FILE* out) {
        FrameWriter writer(out, specs, {{"k", "v"}});
        writer.write(std::span(a).first(1));
        writer.write(std::span(a).subspan(1));
        writer.write(std::span(b));
        writer.finish();
    });
    const Frame back = read_frame_bytes(std::as_bytes(std::span(bytes)), nullptr, "mem");
    CHECK(back.at("a").data<float>()[3] == 4.0f);
    CHECK(back.at("b").data<std::int32_t>()[2] == 7);
    CHECK(back.meta("k") == "v");

    capture([&](std::FILE* out) {
        FrameWriter writer(out, specs, {});
        writer.write(std::span(a));
        CHECK_THROWS_WITH_AS(writer.finish(), "frame writer: 16 of the 28 bytes of tensor data were written", Error);
        CHECK_THROWS_AS(writer.write(std::span(a)), Error);
    });
}

TEST_CASE("a stream of frames: one per call, nullopt at a clean end") {
    TempDir dir;
    std::string stream;
    for (int i = 0; i < 3; ++i) stream += capture([&](std::FILE* out) { write_frame(out, sample_frame(i)); });
    heads::test::write_file(dir / "s", stream);
    FrameReader reader((dir / "s").string());
    for (int i = 0; i < 3; ++i) {
        auto frame = reader.next();
        REQUIRE(frame);
        check_same(*frame, sample_frame(i));
    }
    CHECK(!reader.next());
    CHECK(reader.count() == 3);

    heads::test::write_file(dir / "empty", "");
    CHECK(!FrameReader((dir / "empty").string()).next());
}

TEST_CASE("a truncated stream names the frame") {
    TempDir dir;
    const std::string one = capture([&](std::FILE* out) { write_frame(out, sample_frame(0)); });
    struct Cut {
        std::size_t keep;
        std::string message;
    };
    for (const Cut& cut : {Cut{3, "of the 8 bytes of its header size"}, Cut{8 + 5, "bytes of its header"},
                           Cut{one.size() - 1, "46 of the 47 bytes of its tensor data"}}) {
        heads::test::write_file(dir / "s", one + one.substr(0, cut.keep));
        FrameReader reader((dir / "s").string());
        CHECK(reader.next());
        CHECK_THROWS_WITH_AS(reader.next(), doctest::Contains(((dir / "s").string() + ": frame 2: truncated").c_str()), Error);
        FrameReader again((dir / "s").string());
        again.next();
        CHECK_THROWS_WITH_AS(again.next(), doctest::Contains(cut.message.c_str()), Error);
    }
}

TEST_CASE("every header check") {
    const std::string data8(8, '\0');
    CHECK(read_error(header_blob(R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}})", data8)) == "no error");
    CHECK(read_error(std::string("\x10\0\0\0", 4)) == "t: 4 bytes is too short for a safetensors header size (8 bytes)");
    CHECK(read_error(std::string("\xff\xff\xff\xff\xff\xff\xff\x7f", 8) + "{}") ==
          "t: header size 9223372036854775807 is past the format's limit of 100000000 bytes");
    CHECK(read_error(std::string("\x40\0\0\0\0\0\0\0", 8) + "{}") ==
          "t: header size 64 is past the end of the data (10 bytes)");
    CHECK(read_error(header_blob("{\"a\": ")) == "t: the header is not valid JSON");
    CHECK(read_error(header_blob("[1, 2]")) == "t: the header is not a JSON object");
    CHECK(read_error(header_blob(R"({"__metadata__": {"a": 1}})")) == "t: __metadata__ 'a' is not a string");
    CHECK(read_error(header_blob(R"({"__metadata__": []})")) == "t: __metadata__ is not a JSON object");
    CHECK(read_error(header_blob(R"({"a": 3})")) == "t: tensor 'a': its entry is not a JSON object");
    CHECK(read_error(header_blob(R"({"a":{"dtype":"F32","shape":[2]}})")) ==
          "t: tensor 'a': needs dtype, shape and data_offsets");
    CHECK(read_error(header_blob(R"({"a":{"dtype":"Q4","shape":[2],"data_offsets":[0,8]}})", data8)) ==
          "t: tensor 'a': unknown dtype 'Q4'");
    CHECK(read_error(header_blob(R"({"a":{"dtype":"F32","shape":[-2],"data_offsets":[0,8]}})", data8)) ==
          "t: tensor 'a': shape must hold non-negative integers");
    CHECK(read_error(header_blob(R"({"a":{"dtype":"F32","shape":[4294967296,4294967296],"data_offsets":[0,8]}})",
                                 data8)) == "t: tensor 'a': shape is too large");
    CHECK(read_error(header_blob(R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,-8]}})", data8)) ==
          "t: tensor 'a': data_offsets must be two non-negative integers");
    CHECK(read_error(header_blob(R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[8,0]}})", data8)) ==
          "t: tensor 'a': data_offsets [8, 0] end before they begin");
    CHECK(read_error(header_blob(R"({"a":{"dtype":"F32","shape":[3],"data_offsets":[0,8]}})", data8)) ==
          "t: tensor 'a': F32 [3] needs 12 bytes, data_offsets [0, 8] hold 8");
    CHECK(read_error(header_blob(R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},)"
                                 R"("b":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}})",
                                 data8)) == "t: tensors 'a' and 'b' overlap");
    CHECK(read_error(header_blob(R"({"a":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}})", data8)) ==
          "t: 4 bytes of the data before tensor 'a' belong to no tensor");
    CHECK(read_error(header_blob(R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}})", "1234")) ==
          "t: truncated: the header promises 8 bytes of tensor data, 4 are there");
    CHECK(read_error(header_blob(R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}})", data8 + "xx")) ==
          "t: 2 bytes of trailing garbage after the tensor data");
    CHECK(read_error(header_blob(R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,1000000000000]}})", data8))
              .find("needs 8 bytes") != std::string::npos);
}

TEST_CASE("a stream header that claims terabytes fails on the truncation, not on memory") {
    TempDir dir;
    const std::string json = R"({"a":{"dtype":"U8","shape":[1099511627776],"data_offsets":[0,1099511627776]}})";
    heads::test::write_file(dir / "s", header_blob(json, "abc"));
    FrameReader reader((dir / "s").string());
    CHECK_THROWS_WITH_AS(reader.next(), doctest::Contains("frame 1: truncated: 3 of the 1099511627776 bytes"), Error);
}

TEST_CASE("write_frame_file leaves nothing behind when it fails") {
    TempDir dir;
    CHECK_THROWS_AS(write_frame_file(dir / "no" / "such" / "dir.safetensors", sample_frame(0)), Error);
    CHECK(std::filesystem::is_empty(dir.path()));
}
