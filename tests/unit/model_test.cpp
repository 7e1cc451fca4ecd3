// lib/model's Session API on a random model (scripts/make-random-model):
// tree masks verify many drafts in one pass, keep_rows and truncate roll the
// cache back, fork copies it, head masks change between steps, and the
// config parser rejects what it must. The weight cache keeps every weight
// format.
#include <doctest/doctest.h>

#include <cmath>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <string>
#include <type_traits>
#include <vector>

#include "kv/kv_frame.hpp"
#include "model/session.hpp"
#include "model/weight_cache.hpp"
#include "model/weights.hpp"
#include "tensor/error.hpp"
#include "temp_dir.hpp"

using namespace heads;

namespace {

struct RandomModel {
    test::TempDir dir;
    Context ctx{1};
    std::shared_ptr<const Model> model;
    explicit RandomModel(const std::string& args) {
        const std::string command = std::string(HEADS_PYTHON) + " " + HEADS_SOURCE_DIR + "/scripts/make-random-model -o " +
                                    (dir / "m").string() + " --vocab 100 " + args + " > /dev/null";
        REQUIRE(std::system(command.c_str()) == 0);
        model = Model::load(ctx, dir / "m");
    }
};

ForwardRequest step(std::span<const std::int32_t> tokens, LogitRows rows = LogitRows::all) {
    ForwardRequest r;
    r.tokens = tokens;
    r.logits = rows;
    return r;
}

std::vector<float> run(Session& s, const std::vector<std::int32_t>& tokens, LogitRows rows = LogitRows::all) {
    const ForwardResult r = s.forward(step(tokens, rows));
    return {r.logits.begin(), r.logits.end()};
}

std::vector<float> run_request(Session& s, const ForwardRequest& request) {
    const ForwardResult r = s.forward(request);
    return {r.logits.begin(), r.logits.end()};
}

std::vector<float> row(const std::vector<float>& logits, std::size_t i, std::size_t vocab) {
    return {logits.begin() + std::ptrdiff_t(i * vocab), logits.begin() + std::ptrdiff_t((i + 1) * vocab)};
}

double difference(const std::vector<float>& a, const std::vector<float>& b) {
    REQUIRE(a.size() == b.size());
    double worst = 0;
    for (std::size_t i = 0; i < a.size(); ++i) worst = std::max(worst, double(std::abs(a[i] - b[i])));
    return worst;
}

constexpr double kTolerance = 1e-4;  // logits of a few units, float32 in different orders

}  // namespace

TEST_CASE("a tree mask verifies branches in one pass; keep_rows keeps the accepted path") {
    RandomModel m("--d-model 64 --n-layers 2 --n-heads 4 --n-kv-heads 2");
    const std::size_t vocab = 100;
    const std::vector<std::int32_t> prompt = {1, 5, 9, 14};
    // Tree after the prompt: a; b and c both follow a (siblings at one position); d follows c.
    const std::vector<std::int32_t> tree = {20, 30, 40, 50};
    const std::vector<std::int32_t> positions = {4, 5, 5, 6};
    const std::vector<std::uint8_t> mask = {1, 0, 0, 0,   // a
                                            1, 1, 0, 0,   // b: a b
                                            1, 0, 1, 0,   // c: a c
                                            1, 0, 1, 1};  // d: a c d
    Session session(m.model, m.ctx);
    run(session, prompt);
    ForwardRequest request = step(tree);
    request.positions = positions;
    request.mask = mask;
    const ForwardResult result = session.forward(request);
    const std::vector<float> verified(result.logits.begin(), result.logits.end());

    auto linear = [&](const std::vector<std::int32_t>& tail) {
        Session plain(m.model, m.ctx);
        std::vector<std::int32_t> all = prompt;
        all.insert(all.end(), tail.begin(), tail.end());
        const auto logits = run(plain, all);
        return row(logits, all.size() - 1, vocab);
    };
    CHECK(difference(row(verified, 0, vocab), linear({20})) < kTolerance);
    CHECK(difference(row(verified, 1, vocab), linear({20, 30})) < kTolerance);
    CHECK(difference(row(verified, 2, vocab), linear({20, 40})) < kTolerance);
    CHECK(difference(row(verified, 3, vocab), linear({20, 40, 50})) < kTolerance);

    // Accept a, c, d: the cache is then the linear sequence's, and continues like it.
    const std::vector<std::int64_t> accepted = {0, 2, 3};
    session.keep_rows(accepted);
    CHECK(session.next_position() == 7);
    CHECK(session.cache().head(1, 1).slots == 7);
    CHECK(difference(run(session, {60}), linear({20, 40, 50, 60})) < kTolerance);

    // Rejecting every row of a block leaves the cache as before it.
    run(session, {70, 71});
    session.keep_rows({});
    CHECK(session.next_position() == 8);
    CHECK(difference(run(session, {61}), linear({20, 40, 50, 60, 61})) < kTolerance);
}

TEST_CASE("truncate rolls back rejected drafts; fork and copy_from copy a sequence") {
    RandomModel m("--d-model 64 --n-layers 2 --n-heads 2 --n-kv-heads 1");
    const std::vector<std::int32_t> prompt = {1, 7, 8, 9, 10, 11};
    Session session(m.model, m.ctx);
    run(session, prompt);
    const auto expected_next = run(session, {42}, LogitRows::last);
    run(session, {43, 44, 45});  // drafts, then rejected
    session.truncate(6);
    CHECK(session.next_position() == 6);
    CHECK(session.cache().total_slots() == 6 * 2);  // 2 layers x 1 KV head
    CHECK(difference(run(session, {42}, LogitRows::last), expected_next) == 0);

    auto beam = session.fork();
    const auto a = run(session, {50}, LogitRows::last);
    const auto b = run(*beam, {51}, LogitRows::last);
    Session fresh(m.model, m.ctx);
    run(fresh, {1, 7, 8, 9, 10, 11, 42});
    CHECK(difference(run(fresh, {51}, LogitRows::last), b) < kTolerance);
    beam->copy_from(session);  // the beam becomes the other sequence
    CHECK(difference(run(*beam, {52}, LogitRows::last), run(session, {52}, LogitRows::last)) == 0);
    (void)a;
}

TEST_CASE("a head mask changes between steps, and masking equals zeroing the head") {
    RandomModel m("--d-model 64 --n-layers 2 --n-heads 4 --n-kv-heads 4");
    Session session(m.model, m.ctx);
    const auto plain = run(session, {1, 2, 3}, LogitRows::last);
    session.reset();  // a new sequence: nothing cached, back at position 0
    CHECK(session.cache().total_slots() == 0);
    CHECK(session.next_position() == 0);
    session.set_head_mask({{0, 1, 0, 0}, {0, 0, 0, 0}});
    const auto masked = run(session, {1, 2, 3}, LogitRows::last);
    session.reset();  // ... with the mask kept
    CHECK(difference(run(session, {1, 2, 3}, LogitRows::last), masked) == 0);
    CHECK(difference(plain, masked) > 1e-3);
    session.set_head_mask({{0, 0, 0, 0}, {0, 0, 0, 0}});
    session.reset();
    CHECK(difference(run(session, {1, 2, 3}, LogitRows::last), plain) == 0);
    CHECK_THROWS_WITH_AS(session.set_head_mask({{0, 0, 0}, {0, 0, 0, 0}}), "head mask for 3 heads in layer 0, which has 4",
                         Error);
}

TEST_CASE("final hidden states, logits of a suffix, and bad requests") {
    RandomModel m("--d-model 64 --n-layers 1 --n-heads 2");
    Session session(m.model, m.ctx);
    const std::vector<std::int32_t> tokens = {1, 2, 3, 4, 5};
    ForwardRequest request = step(tokens);
    request.final_hidden = true;
    request.logits_from = 3;
    const ForwardResult r = session.forward(request);
    CHECK(r.hidden.size() == 5 * 64);
    CHECK(r.logits.size() == 2 * 100);
    Session other(m.model, m.ctx);
    const auto all = run(other, tokens);
    CHECK(difference({r.logits.begin(), r.logits.end()}, {all.begin() + 300, all.end()}) < kTolerance);

    const std::vector<std::int32_t> bad = {1, 100};
    CHECK_THROWS_WITH_AS(session.forward(step(bad)), "token id 100 is out of range (vocabulary of 100)", Error);
    ForwardRequest masked = step(tokens);
    const std::vector<std::uint8_t> short_mask(3, 1);
    masked.mask = short_mask;
    CHECK_THROWS_AS(session.forward(masked), Error);
}

TEST_CASE("a KV frame from another model is refused, clearly") {
    RandomModel a("--d-model 64 --n-layers 1 --n-heads 2 --seed 1");
    RandomModel b("--d-model 64 --n-layers 1 --n-heads 2 --seed 2");
    CHECK(a.model->fingerprint() != b.model->fingerprint());
    CHECK(a.model->fingerprint().size() == 16);
    Session session(a.model, a.ctx);
    run(session, {1, 2, 3});
    const Frame frame = kv_to_frame(session.cache(), {a.model->fingerprint(), {1, 2, 3}, "full"});
    Session other(b.model, b.ctx);
    const std::string expected = "the KV frame is from model " + a.model->fingerprint();
    CHECK_THROWS_WITH_AS(other.load_cache(kv_from_frame(frame, "cache"), "cache"), doctest::Contains(expected.c_str()),
                         Error);
    Session same(a.model, a.ctx);
    same.load_cache(kv_from_frame(frame, "cache"), "cache");
    CHECK(same.next_position() == 3);
}

TEST_CASE("config.json is checked strictly") {
    const std::string base = R"({"architectures": ["LlamaForCausalLM"], "hidden_size": 64, "num_hidden_layers": 2,
        "num_attention_heads": 4, "num_key_value_heads": 2, "intermediate_size": 128, "vocab_size": 50)";
    const LlamaConfig c = parse_config(base + "}", "config.json");
    CHECK(c.head_dim == 16);
    CHECK(c.layers[1].kv_head_of == std::vector<std::int32_t>{0, 0, 1, 1});
    CHECK(c.sliding_window == 0);
    CHECK_THROWS_WITH_AS(parse_config(R"({"architectures": ["BertModel"]})", "config.json"),
                         doctest::Contains("unsupported architecture"), Error);
    CHECK_THROWS_WITH_AS(parse_config(base + R"(, "rope_scaling": {"rope_type": "yarn", "factor": 4}})", "config.json"),
                         doctest::Contains("unsupported rope_scaling type \"yarn\""), Error);
    CHECK_THROWS_WITH_AS(parse_config(base + R"(, "hidden_act": "gelu"})", "config.json"), doctest::Contains("gelu"), Error);
    // A token id left to its default must fit the vocabulary too (a fuzzer found vocab_size 1 accepted).
    const std::string tiny = R"({"architectures": ["LlamaForCausalLM"], "hidden_size": 64, "num_hidden_layers": 2,
        "num_attention_heads": 4, "intermediate_size": 128, "vocab_size": 2)";
    CHECK_THROWS_WITH_AS(parse_config(tiny + R"(, "bos_token_id": 0})", "config.json"),
                         R"(config.json: no "eos_token_id", and Llama's default 2 is not a token id of a vocabulary of 2)",
                         Error);
    CHECK(parse_config(tiny + R"(, "bos_token_id": 0, "eos_token_id": 1})", "config.json").eos_token_id == 1);
    // A key of the wrong JSON type is heads::Error naming the file and the key, not nlohmann's type_error.
    CHECK_THROWS_WITH_AS(parse_config(R"({"model_type": 5})", "config.json"),
                         R"(config.json: "model_type" must be a string, not 5)", Error);
    CHECK_THROWS_WITH_AS(parse_config(base + R"(, "hidden_act": ["silu"]})", "config.json"),
                         R"(config.json: "hidden_act" must be a string, not ["silu"])", Error);
    CHECK_THROWS_WITH_AS(parse_config(base + R"(, "rope_scaling": {"rope_type": 3, "factor": 2}})", "config.json"),
                         R"(config.json: rope_scaling: "rope_type" must be a string, not 3)", Error);
    CHECK_THROWS_WITH_AS(parse_config(base + R"(, "rope_scaling": "linear"})", "config.json"),
                         doctest::Contains(R"("rope_scaling" must be an object or null)"), Error);
    // A number beyond double's range is refused, never read as infinity.
    CHECK_THROWS_WITH_AS(parse_config(base + R"(, "rope_theta": 1e999})", "config.json"),
                         doctest::Contains("config.json: not valid JSON"), Error);
    CHECK_THROWS_WITH_AS(parse_config(base + R"(, "head_layout": {"layers": [
        {"query_heads": [0, 1], "kv_heads": [0, 1], "kv_head_of": [0, 0]},
        {"query_heads": [], "kv_heads": [], "kv_head_of": []}]}})", "config.json"),
                         doctest::Contains("every KV head must serve"), Error);
    const LlamaConfig pruned = parse_config(base + R"(, "head_layout": {"layers": [
        {"query_heads": [3, 1], "kv_heads": [1], "kv_head_of": [0, 0]},
        {"query_heads": [], "kv_heads": [], "kv_head_of": []}]}})", "config.json");
    CHECK(pruned.pruned);
    CHECK(pruned.layers[0].n_heads() == 2);
    CHECK(pruned.layers[1].n_kv_heads() == 0);
    const std::string mistral = R"({"architectures": ["MistralForCausalLM"], "hidden_size": 64, "num_hidden_layers": 1,
        "num_attention_heads": 4, "intermediate_size": 128, "vocab_size": 50})";
    CHECK(parse_config(mistral, "c").sliding_window == 4096);
    // Absurd sizes are refused by name, not met later as "out of memory".
    const auto sized = [](std::string_view layers, std::string_view heads, std::string_view rest = "") {
        return fmt::format(R"({{"architectures": ["LlamaForCausalLM"], "hidden_size": 4096, "num_hidden_layers": {},
            "num_attention_heads": {}, "intermediate_size": 128, "vocab_size": 50{}}})", layers, heads, rest);
    };
    CHECK(parse_config(sized("4096", "256"), "c").layers.size() == 4096);
    CHECK_THROWS_WITH_AS(parse_config(sized("1000000000", "8"), "dir/config.json"),
                         R"(dir/config.json: "num_hidden_layers" is 1000000000, more than heads supports (4096))", Error);
    CHECK_THROWS_WITH_AS(parse_config(sized("8", "8192"), "c"), doctest::Contains(R"("num_attention_heads" is 8192)"), Error);
    CHECK_THROWS_WITH_AS(parse_config(sized("4096", "512"), "c"),
                         doctest::Contains(R"("num_hidden_layers" x "num_attention_heads" is 2097152)"), Error);
    CHECK_THROWS_WITH_AS(parse_config(sized("8", "8", R"(, "max_position_embeddings": 2147483648)"), "c"),
                         doctest::Contains(R"("max_position_embeddings" is 2147483648)"), Error);
    CHECK_THROWS_WITH_AS(parse_config(sized("8", "8", R"(, "head_dim": 33554432)"), "c"),
                         doctest::Contains(R"("head_dim" is 33554432)"), Error);
}

TEST_CASE("the weight index names plain files of the model directory") {
    test::TempDir dir;
    const auto index_naming = [&](std::string_view shard_json) {
        std::ofstream(dir / "model.safetensors.index.json") << R"({"weight_map": {"lm_head.weight": )" << shard_json << "}}";
        return WeightFiles::open(dir.path());
    };
    const std::string where = (dir / "model.safetensors.index.json").string();
    // A NUL would open the shorter name before it ("model"): refused, shown as \x00.
    CHECK_THROWS_WITH_AS(index_naming(R"("model\u0000.safetensors")"),
                         (where + R"(: shard 'model\x00.safetensors' is not a file in the model directory)").c_str(), Error);
    for (const char* shard : {R"("")", R"(".")", R"("..")", R"("../model.safetensors")", R"("/etc/passwd")"})
        CHECK_THROWS_WITH_AS(index_naming(shard), doctest::Contains("is not a file in the model directory"), Error);
    CHECK(parse_weight_index(R"({"weight_map": {"b": "2.st", "a": "1.st", "c": "2.st"}})", "i") ==
          std::vector<std::string>{"1.st", "2.st"});
    CHECK_THROWS_WITH_AS(parse_weight_index(R"({"weight_map": {}})", "i"), R"(i: "weight_map" names no shard)", Error);
}

TEST_CASE("the cache can track the attention each slot receives, step after step") {
    RandomModel m("--d-model 64 --n-layers 2 --n-heads 4 --n-kv-heads 2");
    Session session(m.model, m.ctx);
    session.cache().track_received(true);
    ForwardProbes probes;
    probes.received = true;
    ForwardRequest request = step(std::vector<std::int32_t>{1, 2, 3, 4, 5});
    const std::vector<std::int32_t> prompt = {1, 2, 3, 4, 5};
    request.tokens = prompt;
    request.probes = &probes;
    session.forward(request);
    const KvHead& head = session.cache().head(1, 1);
    double total = 0;
    for (std::int64_t s = 0; s < head.slots; ++s) {
        CHECK(head.received.data()[s] == doctest::Approx(probes.received_all[1][std::size_t(5 + s)]));
        total += head.received.data()[s];
    }
    CHECK(total == doctest::Approx(2 * 5));  // 2 query heads read KV head 1, 5 queries each
    run(session, {6}, LogitRows::last);
    total = 0;
    for (std::int64_t s = 0; s < head.slots; ++s) total += head.received.data()[s];
    CHECK(total == doctest::Approx(2 * 6));
    const float kept = head.received.data()[4];
    const std::vector<std::int64_t> recent = {4, 5};
    session.cache().keep(1, 1, recent);
    CHECK(head.received.data()[0] == kept);
}

TEST_CASE("the weight cache keeps matrices of every format, rows in several parts included, and refuses another") {
    Context ctx(1);
    test::TempDir dir;
    const std::int64_t in = 48;
    std::vector<float> a(std::size_t(5 * in)), b(std::size_t(7 * in));
    for (std::size_t i = 0; i < a.size(); ++i) a[i] = std::sin(float(i));
    for (std::size_t i = 0; i < b.size(); ++i) b[i] = std::cos(float(i));
    const Tensor parts[] = {Tensor::copy_of(DType::F32, {5, in}, std::as_bytes(std::span(a))),
                            Tensor::copy_of(DType::F32, {7, in}, std::as_bytes(std::span(b)))};
    std::vector<WeightFormat> formats = {WeightFormat::onednn_f32};
    if (row_gemv_supported()) formats.push_back(WeightFormat::rows_f32);
    for (const WeightFormat format : formats) {
        CAPTURE(format_name(format));
        const std::vector<CachedMatrixSpec> specs = {{"w", in, 12, {parts[0], parts[1]}}};
        std::vector<PackedMatrix> made;
        made.push_back(pack_matrix(ctx, parts, format));
        const WeightCache cache(dir / format_name(format), "key");
        REQUIRE(cache.save(specs, made));
        const auto loaded = cache.load(specs, format);
        REQUIRE(loaded);
        CHECK((loaded->at(0).rows() != nullptr) == is_rows(format));
        std::vector<float> x(std::size_t(in), 0.25f), y_made(12), y_loaded(12);
        matmul(ctx, {y_made.data(), x.data(), 1}, made[0]);
        matmul(ctx, {y_loaded.data(), x.data(), 1}, loaded->at(0));
        CHECK(y_made == y_loaded);
        CHECK_FALSE(WeightCache(dir / format_name(format), "another key").load(specs, format));
    }
}

namespace {

// Stores VALUE in an enum field as a file would hold it: its bytes, whatever
// the enum's values are (converting VALUE to the enum could be undefined).
template <class Enum>
void store_int(Enum& field, std::underlying_type_t<Enum> value) {
    std::memcpy(&field, &value, sizeof field);
}

// Rewrites the oneDNN descriptor stored for the cache file's first matrix
// (same length of hex, so the header and the offsets stay as they are).
void rewrite_desc(const std::filesystem::path& path, void (*change)(dnnl_memory_desc_t&)) {
    std::string text;
    {
        std::ifstream in(path, std::ios::binary);
        text.assign(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
    }
    const std::size_t at = text.find("\"desc\":\"") + 8;
    REQUIRE(at > 8);
    dnnl_memory_desc_t raw{};
    auto* bytes = reinterpret_cast<unsigned char*>(&raw);
    for (std::size_t i = 0; i < sizeof raw; ++i) bytes[i] = std::uint8_t(std::stoi(text.substr(at + 2 * i, 2), nullptr, 16));
    change(raw);
    for (std::size_t i = 0; i < sizeof raw; ++i) text.replace(at + 2 * i, 2, fmt::format("{:02x}", bytes[i]));
    std::ofstream(path, std::ios::binary | std::ios::trunc) << text;
}

}  // namespace

TEST_CASE("a weight cache with a hostile oneDNN descriptor is refused (naming the file) and made again, never read") {
    Context ctx(1);
    test::TempDir dir;
    const std::int64_t in = 48, out = 200;  // several blocks of oneDNN's layout each way
    std::vector<float> w(std::size_t(in * out));
    for (std::size_t i = 0; i < w.size(); ++i) w[i] = float(i);
    const Tensor parts[] = {Tensor::copy_of(DType::F32, {out, in}, std::as_bytes(std::span(w)))};
    const std::vector<CachedMatrixSpec> specs = {{"w", in, out, {parts[0]}}};
    using Change = void (*)(dnnl_memory_desc_t&);
    const std::pair<const char*, Change> changes[] = {
        {"ndims", [](dnnl_memory_desc_t& d) { d.ndims = 0x7fffffff; }},
        {"negative ndims", [](dnnl_memory_desc_t& d) { d.ndims = -5; }},
        {"inner blocks", [](dnnl_memory_desc_t& d) { d.format_desc.blocking.inner_nblks = 1000; }},
        {"strides", [](dnnl_memory_desc_t& d) { d.format_desc.blocking.strides[1] *= 1000; }},
        // 77 is none of the enums' values: stored as the bytes a file would hold.
        {"format kind", [](dnnl_memory_desc_t& d) { store_int(d.format_kind, 77); }},
        {"data type", [](dnnl_memory_desc_t& d) { store_int(d.data_type, 77); }},
    };
    for (const auto& [what, change] : changes) {
        CAPTURE(std::string(what));
        const auto path = dir / fmt::format("{}.weights", what);
        const WeightCache cache(path, "key");
        std::vector<PackedMatrix> made;
        made.push_back(pack_matrix(ctx, parts, WeightFormat::onednn_f32));
        REQUIRE(cache.save(specs, made));
        REQUIRE(cache.read(specs, WeightFormat::onednn_f32));
        rewrite_desc(path, change);
        CHECK_FALSE(cache.load(specs, WeightFormat::onednn_f32));
        CHECK_THROWS_AS(cache.read(specs, WeightFormat::onednn_f32), Error);
        try {
            cache.read(specs, WeightFormat::onednn_f32);
        } catch (const Error& error) {
            CHECK(std::string(error.what()).starts_with(path.string() + ": matrix 0 (w): layout "));
        }
    }
}

TEST_CASE("a weight cache made from other weights of the same shape, under the same key, is stale: made again") {
    Context ctx(1);
    test::TempDir dir;
    const std::int64_t in = 48, out = 200;  // several blocks of oneDNN's layout each way
    std::vector<float> mine(std::size_t(in * out)), other(mine.size());
    for (std::size_t i = 0; i < mine.size(); ++i) {
        mine[i] = std::sin(float(i));
        other[i] = std::cos(float(i));
    }
    const std::vector<Tensor> my_parts = {Tensor::copy_of(DType::F32, {out, in}, std::as_bytes(std::span(mine)))};
    const std::vector<Tensor> other_parts = {Tensor::copy_of(DType::F32, {out, in}, std::as_bytes(std::span(other)))};
    std::vector<WeightFormat> formats = {WeightFormat::onednn_f32};
    if (row_gemv_supported()) formats.push_back(WeightFormat::rows_bf16);
    for (const WeightFormat format : formats) {
        CAPTURE(format_name(format));
        const auto path = dir / fmt::format("{}.weights", format_name(format));
        const WeightCache cache(path, "key");
        std::vector<PackedMatrix> made;
        made.push_back(pack_matrix(ctx, other_parts, format));
        REQUIRE(cache.save({{"w", in, out, other_parts}}, made));
        REQUIRE(cache.read({{"w", in, out, other_parts}}, format));
        const std::vector<CachedMatrixSpec> specs = {{"w", in, out, my_parts}};
        CHECK_THROWS_WITH_AS(cache.read(specs, format),
                             (path.string() + ": matrix 0 (w): its values are not those of the model's weights (made "
                                              "from another model)")
                                 .c_str(),
                             Error);
        CHECK_FALSE(cache.load(specs, format));
    }
}

TEST_CASE("precision names") {
    CHECK(precision_named("auto") == Precision::automatic);
    CHECK(precision_named("f32") == Precision::f32);
    CHECK(precision_named("bf16") == Precision::bf16);
    CHECK_THROWS_WITH_AS(precision_named("f16"), "unknown precision 'f16' (heads knows: auto, f32, bf16)", Error);
}

TEST_CASE("a pass can start at a layer from the residual stream entering it, and gives the whole pass's logits") {
    RandomModel m("--d-model 64 --n-layers 3 --n-heads 4 --n-kv-heads 2");
    Session session(m.model, m.ctx);
    const std::vector<std::int32_t> tokens = {1, 7, 3, 9, 4, 4};
    ForwardProbes probes;
    probes.hidden_layers = {0, 1};
    ForwardRequest whole = step(tokens);
    whole.probes = &probes;
    const ForwardResult r = session.forward(whole);
    const std::vector<float> logits(r.logits.begin(), r.logits.end());
    for (const std::int64_t first : {1, 2}) {
        session.reset();
        ForwardRequest from = step(tokens);
        from.first_layer = first;
        from.residual = probes.hidden.at(first - 1);
        CHECK(difference(run_request(session, from), logits) == 0);
    }
    // With a head of layer 2 masked, starting at layer 2 equals the whole masked pass.
    session.set_head_mask({{0, 0, 0, 0}, {0, 0, 0, 0}, {0, 1, 0, 0}});
    session.reset();
    const auto masked = run(session, tokens);
    session.reset();
    ForwardRequest from = step(tokens);
    from.first_layer = 2;
    from.residual = probes.hidden.at(1);
    CHECK(difference(run_request(session, from), masked) == 0);
    CHECK(difference(masked, logits) > 1e-3);

    from.residual = std::span<const float>(probes.hidden.at(1)).first(10);
    CHECK_THROWS_WITH_AS(session.forward(from), "a residual of 10 values for 6 new tokens entering layer 2 (needs 384)",
                         Error);
    from.first_layer = 3;
    CHECK_THROWS_WITH_AS(session.forward(from), "first layer 3 is not a layer of the model (0 to 2)", Error);
}

TEST_CASE("several sequences in one pass, each with its own head mask and cache, give each one's own logits") {
    RandomModel m("--d-model 64 --n-layers 3 --n-heads 4 --n-kv-heads 2");
    Session session(m.model, m.ctx);
    const std::vector<std::int32_t> tokens = {1, 7, 3, 9, 4, 4, 2, 8, 5, 6};
    const std::vector<std::vector<std::vector<std::uint8_t>>> masks = {
        {{0, 0, 0, 0}, {0, 0, 0, 0}, {0, 0, 0, 0}},
        {{1, 0, 0, 0}, {0, 0, 0, 0}, {0, 0, 0, 0}},
        {{0, 0, 0, 0}, {0, 1, 1, 0}, {0, 0, 0, 1}}};
    // One sequence at a time: the mask set on the session, a fresh cache, then a second step on top.
    const std::vector<std::int32_t> first(tokens.begin(), tokens.begin() + 7), second(tokens.begin() + 7, tokens.end());
    std::vector<std::vector<float>> single_first, single_second;
    for (const auto& mask : masks) {
        session.set_head_mask(mask);
        session.reset();
        single_first.push_back(run(session, first));
        single_second.push_back(run(session, second, LogitRows::last));
    }
    session.set_head_mask(masks[0]);
    session.reset();
    ForwardRequest together = step(first);
    together.sequence_masks = masks;
    const auto all = run_request(session, together);
    ForwardRequest next = step(second, LogitRows::last);
    next.sequence_masks = masks;
    const auto last = run_request(session, next);  // each continues its own cache
    const std::size_t vocab = std::size_t(m.model->vocab_size());
    REQUIRE(all.size() == masks.size() * first.size() * vocab);
    REQUIRE(last.size() == masks.size() * vocab);
    for (std::size_t b = 0; b < masks.size(); ++b) {
        const std::vector<float> block(all.begin() + std::ptrdiff_t(b * first.size() * vocab),
                                       all.begin() + std::ptrdiff_t((b + 1) * first.size() * vocab));
        CHECK(difference(block, single_first[b]) <= kTolerance);  // more rows per matmul: oneDNN may sum in another order
        CHECK(difference(row(last, b, vocab), single_second[b]) <= kTolerance);
    }
    CHECK(difference(single_first[0], single_first[1]) > 1e-3);

    // Starting at a layer, with logits of a suffix, as head ablation asks.
    ForwardProbes probes;
    probes.hidden_layers = {0};
    session.reset();
    ForwardRequest whole = step(tokens);
    whole.probes = &probes;
    session.forward(whole);
    ForwardRequest from = step(tokens);
    from.first_layer = 1;
    from.residual = probes.hidden.at(0);
    from.logits_from = 3;
    std::vector<std::vector<float>> singles;
    for (const auto& mask : masks) {
        session.set_head_mask(mask);
        session.reset();
        singles.push_back(run_request(session, from));
    }
    session.reset();
    from.sequence_masks = masks;
    const auto stacked = run_request(session, from);
    const std::size_t kept = tokens.size() - 3;
    for (std::size_t b = 0; b < masks.size(); ++b)
        CHECK(difference({stacked.begin() + std::ptrdiff_t(b * kept * vocab),
                          stacked.begin() + std::ptrdiff_t((b + 1) * kept * vocab)},
                         singles[b]) <= kTolerance);

    from.probes = &probes;
    CHECK_THROWS_WITH_AS(session.forward(from),
                         "several sequences in one forward cannot take probes, final hidden states or received mass", Error);
    from.probes = nullptr;
    const std::vector<std::vector<std::vector<std::uint8_t>>> bad = {{{0, 0}, {0, 0, 0, 0}, {0, 0, 0, 0}}};
    from.sequence_masks = bad;
    CHECK_THROWS_WITH_AS(session.forward(from), "head mask for 2 heads in layer 0, which has 4", Error);

    // Sequences that did not go on together: two, then a third joining late.
    session.reset();
    ForwardRequest pair = step(first);
    const std::vector<std::vector<std::vector<std::uint8_t>>> two(masks.begin(), masks.begin() + 2);
    pair.sequence_masks = two;
    run_request(session, pair);
    ForwardRequest three = step(second);
    three.sequence_masks = masks;
    CHECK_THROWS_WITH_AS(session.forward(three),
                         "sequence 2's KV cache holds 0 slots where sequence 0's holds 42: several sequences go on "
                         "together from a reset session",
                         Error);
}
