// lib/kv: slot edits of the per-head cache and KV frames, ragged heads included.
#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <vector>

#include "kv/kv_cache.hpp"
#include "kv/compress.hpp"
#include "kv/head_policy.hpp"
#include "kv/kv_frame.hpp"
#include "safetensors/write.hpp"
#include "kv/policy.hpp"
#include "ops/rope.hpp"
#include "safetensors/keys.hpp"
#include "tensor/error.hpp"

using namespace heads;

namespace {

// Fills head (l, g) with slots at `positions`, key/value values 100*position + dimension.
void fill(KvCache& cache, std::int64_t l, std::int64_t g, const std::vector<std::int32_t>& positions) {
    cache.reserve(l, g, std::int64_t(positions.size()));
    KvHead& h = cache.head(l, g);
    for (std::size_t s = 0; s < positions.size(); ++s) {
        h.pos.data()[s] = positions[s];
        for (std::int64_t d = 0; d < cache.head_dim(); ++d) {
            h.k_f32()[s * std::size_t(cache.head_dim()) + std::size_t(d)] = float(100 * positions[s] + d);
            h.v_f32()[s * std::size_t(cache.head_dim()) + std::size_t(d)] = -float(100 * positions[s] + d);
        }
    }
    h.slots = std::int64_t(positions.size());
}

std::vector<std::int32_t> positions(const KvCache& cache, std::int64_t l, std::int64_t g) {
    const KvHead& h = cache.head(l, g);
    return {h.pos.data(), h.pos.data() + h.slots};
}

}  // namespace

TEST_CASE("append takes strided key and value rows, grows storage, and starts received mass at 0") {
    KvCache cache({2}, 2);
    cache.track_received(true);
    fill(cache, 0, 1, {0});
    cache.head(0, 1).received.data()[0] = 0.5f;
    // Two rows of a fused layout [k0 k1 | v0 v1], head_dim 2: stride 8.
    const std::vector<float> rows{1, 2, 3, 4, -1, -2, -3, -4, 5, 6, 7, 8, -5, -6, -7, -8};
    const std::vector<std::int32_t> at{1, 2};
    cache.append(0, 1, rows.data() + 2, rows.data() + 6, 8, at);
    const KvHead& h = cache.head(0, 1);
    CHECK(positions(cache, 0, 1) == std::vector<std::int32_t>{0, 1, 2});
    CHECK(std::vector<float>(h.k_f32(), h.k_f32() + 6) == std::vector<float>{0, 1, 3, 4, 7, 8});
    CHECK(std::vector<float>(h.v_f32(), h.v_f32() + 6) == std::vector<float>{-0.0f, -1, -3, -4, -7, -8});
    CHECK(std::vector<float>(h.received.data(), h.received.data() + 3) == std::vector<float>{0.5f, 0, 0});
    CHECK(cache.head(0, 0).slots == 0);
}

TEST_CASE("truncate drops positions >= n in every head and keeps synthetic slots") {
    KvCache cache({2, 0, 1}, 4);
    fill(cache, 0, 0, {0, 1, 2, 3, 4});
    fill(cache, 0, 1, {-2, 0, 3, 4});  // a compensation slot, then a ragged head
    fill(cache, 2, 0, {0, 1, 2});
    CHECK(cache.max_position() == 4);
    cache.truncate(3);
    CHECK(positions(cache, 0, 0) == std::vector<std::int32_t>{0, 1, 2});
    CHECK(positions(cache, 0, 1) == std::vector<std::int32_t>{-2, 0});
    CHECK(positions(cache, 2, 0) == std::vector<std::int32_t>{0, 1, 2});
    CHECK(cache.head(0, 1).k_f32()[4] == 0.0f);  // slot 1 now holds position 0's key
    CHECK(cache.total_slots() == 8);
}

TEST_CASE("keep selects slots in any order; storage grows keeping the contents") {
    KvCache cache({1}, 2, 2);
    fill(cache, 0, 0, {0, 1, 2, 3, 4, 5});
    CHECK(cache.head(0, 0).capacity >= 6);
    const std::vector<std::int64_t> sink_and_recent = {0, 4, 5};
    cache.keep(0, 0, sink_and_recent);
    CHECK(positions(cache, 0, 0) == std::vector<std::int32_t>{0, 4, 5});
    CHECK(cache.head(0, 0).v_f32()[3] == -401.0f);
    const std::vector<std::int64_t> reversed = {2, 0};
    cache.keep(0, 0, reversed);
    CHECK(positions(cache, 0, 0) == std::vector<std::int32_t>{5, 0});
    const std::vector<std::int64_t> outside = {3};
    CHECK_THROWS(cache.keep(0, 0, outside));
    cache.reserve_more(100);
    CHECK(positions(cache, 0, 0) == std::vector<std::int32_t>{5, 0});
    CHECK(cache.head(0, 0).k_f32()[0] == 500.0f);
}

TEST_CASE("a ragged cache survives a KV frame round trip, each head stored with only its slots") {
    KvCache cache({2, 0}, 3);
    fill(cache, 0, 0, {0, 1, 2, 3});
    fill(cache, 0, 1, {0, 3});
    KvFrameInfo info{"0123456789abcdef", {1, 2, 3, 4}, "window:1:2", {{6, -1}, {}}};
    const Frame frame = kv_to_frame(cache, info);
    CHECK(frame.meta(keys::kind) == "kv");
    CHECK(frame.meta(keys::tokens) == "1 2 3 4");
    CHECK(frame.at("kv.0.k").shape() == Shape{6, 3});
    CHECK(frame.at("kv.1.k").shape() == Shape{0, 3});
    const auto slots = frame.at("kv.0.slots").data<std::int32_t>();
    CHECK(std::vector<std::int32_t>(slots.begin(), slots.end()) == std::vector<std::int32_t>{4, 2});
    const auto pos = frame.at("kv.0.pos").data<std::int32_t>();
    CHECK(std::vector<std::int32_t>(pos.begin(), pos.end()) == std::vector<std::int32_t>{0, 1, 2, 3, 0, 3});
    // No padding: the data is the kept slots (keys, values, positions) plus the slot counts and budgets.
    CHECK(frame_data_bytes(frame) == 6 * (2 * 3 * 4 + 4) + 2 * 4 * 2);
    const KvFrameContents back = kv_from_frame(frame, "frame");
    CHECK(back.info.model == "0123456789abcdef");
    CHECK(back.info.policy == "window:1:2");
    CHECK(back.info.budgets == KvBudgets{{6, -1}, {}});
    CHECK(kv_frame_policy(frame, "f") == "window:1:2");
    Frame unnamed = frame;
    unnamed.metadata.erase(std::string(keys::policy));
    CHECK(kv_frame_policy(unnamed, "f") == "full");
    // A policy the frame names but heads does not take: the frame is named.
    Frame bad = frame;
    bad.metadata[std::string(keys::policy)] = "window:1:x";
    CHECK_THROWS_WITH_AS(kv_frame_policy(bad, "f.kv: frame 2"),
                         "f.kv: frame 2: heads.policy: KV cache policy window: bad recent count 'x' (a count >= 0)", Error);
    CHECK_THROWS_WITH_AS(kv_from_frame(bad, "f.kv: frame 2"), doctest::Contains("f.kv: frame 2: heads.policy: "), Error);
    CHECK(back.info.tokens == std::vector<std::int32_t>{1, 2, 3, 4});
    CHECK(positions(back.cache, 0, 1) == std::vector<std::int32_t>{0, 3});
    CHECK(back.cache.head(0, 1).k_f32()[4] == 301.0f);
    CHECK(back.cache.kv_head_counts() == std::vector<std::int64_t>{2, 0});
}

TEST_CASE("a KV frame in the padded layout of before is still read, its padding dropped") {
    Frame frame;
    frame.metadata = {{std::string(keys::kind), "kv"}, {std::string(keys::model), "m"}, {std::string(keys::tokens), "1 2 3"}};
    Tensor k = Tensor::zeros(DType::F32, {2, 3, 1}), v = Tensor::zeros(DType::F32, {2, 3, 1});
    for (int i = 0; i < 6; ++i) k.mutable_data<float>()[std::size_t(i)] = float(i);
    Tensor pos = Tensor::zeros(DType::I32, {2, 3});
    const std::vector<std::int32_t> positions_padded = {0, 1, 2, 0, 2, -1};
    std::copy(positions_padded.begin(), positions_padded.end(), pos.mutable_data<std::int32_t>().begin());
    Tensor received = Tensor::zeros(DType::F32, {2, 3});
    received.mutable_data<float>()[4] = 0.5f;
    frame.add("kv.0.k", k);
    frame.add("kv.0.v", v);
    frame.add("kv.0.pos", pos);
    frame.add("kv.0.received", received);
    const KvFrameContents back = kv_from_frame(frame, "old");
    CHECK(positions(back.cache, 0, 0) == std::vector<std::int32_t>{0, 1, 2});
    CHECK(positions(back.cache, 0, 1) == std::vector<std::int32_t>{0, 2});
    CHECK(back.cache.head(0, 1).k_f32()[1] == 4.0f);
    CHECK(back.received.at(0) == std::vector<float>{0, 0, 0, 0, 0.5f});
}

TEST_CASE("bad KV frames are refused with their reason") {
    KvCache cache({1}, 2);
    fill(cache, 0, 0, {0, 1});
    Frame frame = kv_to_frame(cache, {"m", {1, 2}, "full"});
    Frame wrong_kind = frame;
    wrong_kind.metadata[std::string(keys::kind)] = "logits";
    CHECK_THROWS_WITH_AS(kv_from_frame(wrong_kind, "f"), "f: not a KV frame (heads.kind is 'logits')", Error);
    Frame bad_tokens = frame;
    bad_tokens.metadata[std::string(keys::tokens)] = "1 x";
    CHECK_THROWS_WITH_AS(kv_from_frame(bad_tokens, "f"), doctest::Contains("heads.tokens"), Error);
    const auto without = [&](std::vector<std::string> names, std::vector<std::pair<std::string, Tensor>> extra) {
        Frame out;
        out.metadata = frame.metadata;
        for (const auto& [name, tensor] : frame)
            if (std::find(names.begin(), names.end(), name) == names.end()) out.add(name, tensor);
        for (auto& [name, tensor] : extra) out.add(name, tensor);
        return out;
    };
    CHECK_THROWS_WITH_AS(kv_from_frame(without({"kv.0.pos"}, {}), "f"),
                         doctest::Contains("has kv.0.slots but not kv.0.k, kv.0.v and kv.0.pos"), Error);
    Tensor three = Tensor::zeros(DType::I32, {1});
    three.mutable_data<std::int32_t>()[0] = 3;
    CHECK_THROWS_WITH_AS(kv_from_frame(without({"kv.0.slots"}, {}), "f"), doctest::Contains("kv.0.k [2, 2]"), Error);
    Frame more_slots = without({"kv.0.slots", "kv.0.k", "kv.0.v", "kv.0.pos"},
                               {{"kv.0.slots", three}, {"kv.0.k", frame.at("kv.0.k")}, {"kv.0.v", frame.at("kv.0.v")},
                                {"kv.0.pos", frame.at("kv.0.pos")}});
    CHECK_THROWS_WITH_AS(kv_from_frame(more_slots, "f"), doctest::Contains("[3, head_dim] (the sum of kv.0.slots)"), Error);
    Tensor negative = Tensor::zeros(DType::I32, {1});
    negative.mutable_data<std::int32_t>()[0] = -2;
    CHECK_THROWS_WITH_AS(kv_from_frame(without({}, {{"kv.0.budget", negative}}), "f"),
                         doctest::Contains("kv.0.budget holds -2"), Error);
    CHECK_THROWS_WITH_AS(kv_from_frame(without({}, {{"kv.0.score", Tensor::zeros(DType::F32, {3})}}), "f"),
                         doctest::Contains("kv.0.score must be F32 [2]"), Error);
    negative.mutable_data<std::int32_t>()[0] = -1;
    CHECK_THROWS_WITH_AS(kv_from_frame(without({"kv.0.slots"}, {{"kv.0.slots", negative}}), "f"),
                         doctest::Contains("kv.0.slots holds a negative count"), Error);
}

TEST_CASE("policies are made back from their heads.policy name") {
    auto full = make_kv_policy("full");
    CHECK(full->name() == "full");
    KvCache cache({1}, 2);
    fill(cache, 0, 0, {0, 1, 2});
    full->apply(cache, {3, 1});
    CHECK(cache.total_slots() == 3);
    CHECK_THROWS_WITH_AS(make_kv_policy("lru:budget=3"), doctest::Contains("unknown KV cache policy 'lru:budget=3'"), Error);
}

// KV policies: window eviction with sink re-rotation, position shifts.
namespace {

constexpr std::int64_t kHeadDim = 8;

Rope test_rope() {
    Rope rope;
    rope.head_dim = kHeadDim;
    rope.theta = 100.0;
    rope.max_position_embeddings = 64;
    return rope;
}

// The key of a token `seed` at `position`, RoPE applied, computed directly.
std::vector<float> key_at(int seed, std::int32_t position) {
    std::vector<float> key(kHeadDim);
    for (int i = 0; i < kHeadDim; ++i) key[std::size_t(i)] = float(std::sin(seed * 1.7 + i));
    std::vector<double> inv_freq(kHeadDim / 2);
    rope_inv_freq(inv_freq, test_rope(), 64);
    std::vector<float> cos(kHeadDim / 2), sin(kHeadDim / 2);
    rope_tables(cos.data(), sin.data(), {&position, 1}, inv_freq);
    rope_apply({key.data(), 1, kHeadDim, 1, kHeadDim, cos.data(), sin.data()});
    return key;
}

// One layer, one KV head, tokens 0..n-1 at positions 0..n-1 (token seed = position).
KvCache filled_cache(int n) {
    KvCache cache({1}, kHeadDim, n);
    KvHead& head = cache.head(0, 0);
    for (int s = 0; s < n; ++s) {
        const auto key = key_at(s, s);
        std::copy(key.begin(), key.end(), head.k_f32() + s * kHeadDim);
        for (int i = 0; i < kHeadDim; ++i) head.v_f32()[s * kHeadDim + i] = float(s);
        head.pos.data()[s] = s;
    }
    head.slots = n;
    return cache;
}

std::vector<std::int32_t> slot_positions(const KvCache& cache) {
    const KvHead& head = cache.head(0, 0);
    return {head.pos.data(), head.pos.data() + head.slots};
}

}  // namespace

TEST_CASE("kv policy: window names and their errors") {
    CHECK(make_kv_policy("window:4:28")->name() == "window:4:28");
    CHECK(make_kv_policy("window:4:28")->slides());
    CHECK(make_kv_policy("window:4:28")->span() == 32);
    CHECK_FALSE(make_kv_policy("full")->slides());
    for (const char* bad : {"fill", "window", "window:4", "window:4:x", "window:-1:3", "window:-0:3", "window:4:+3",
                            "window:4:0", "window:4,28"})
        CHECK_THROWS_AS(make_kv_policy(bad), Error);
}

TEST_CASE("kv policy: window keeps sinks and the recent positions, sinks re-rotated next to them") {
    const Rope rope = test_rope();
    const auto window = make_kv_policy("window:2:3");
    KvCache cache = filled_cache(10);
    window->apply(cache, {5, 0, &rope});  // nothing has left the window yet
    CHECK(slot_positions(cache).size() == 10);
    window->apply(cache, {10, 0, &rope});
    // Tokens 0, 1 (sinks) and 7, 8, 9 (recent); the sinks now sit at 5, 6.
    CHECK(slot_positions(cache) == std::vector<std::int32_t>{5, 6, 7, 8, 9});
    const KvHead& head = cache.head(0, 0);
    const int tokens[] = {0, 1, 7, 8, 9};
    for (int s = 0; s < 5; ++s) {
        CHECK(head.v_f32()[s * kHeadDim] == float(tokens[s]));  // the right slots survived
        const auto expected = key_at(tokens[s], head.pos.data()[s]);
        for (int i = 0; i < kHeadDim; ++i) CHECK(head.k_f32()[s * kHeadDim + i] == doctest::Approx(expected[std::size_t(i)]).epsilon(1e-5));
    }
    // One more step: the sinks move along with the window.
    const auto key = key_at(10, 10);
    KvHead& h = cache.head(0, 0);
    std::copy(key.begin(), key.end(), h.k_f32() + 5 * kHeadDim);
    h.pos.data()[5] = 10;
    h.slots = 6;
    window->apply(cache, {11, 1, &rope});
    CHECK(slot_positions(cache) == std::vector<std::int32_t>{6, 7, 8, 9, 10});
    const auto sink = key_at(0, 6);
    for (int i = 0; i < kHeadDim; ++i) CHECK(h.k_f32()[i] == doctest::Approx(sink[std::size_t(i)]).epsilon(1e-5));
}

TEST_CASE("kv policy: shift_positions moves and re-rotates what follows a position") {
    KvCache cache = filled_cache(6);
    shift_positions(cache, 4, -3, test_rope());
    CHECK(slot_positions(cache) == std::vector<std::int32_t>{0, 1, 2, 3, 1, 2});
    const KvHead& head = cache.head(0, 0);
    const auto expected = key_at(5, 2);
    for (int i = 0; i < kHeadDim; ++i) CHECK(head.k_f32()[5 * kHeadDim + i] == doctest::Approx(expected[std::size_t(i)]).epsilon(1e-5));
}

// Budgeted policies (head_policy.hpp): what every one of them guarantees.
namespace {

// n_layers layers of n_kv_heads heads, positions 0..n-1, keys and values from
// a fixed pseudo-random sequence, received mass tracked (random, so rankings differ by head).
KvCache random_cache(std::int64_t n_layers, std::int64_t n_kv_heads, std::int32_t n, std::int64_t window = 0) {
    KvCache cache(std::vector<std::int64_t>(std::size_t(n_layers), n_kv_heads), 4);
    cache.track_received(true, window);
    std::uint32_t state = 12345;
    const auto next = [&] { return float((state = state * 1664525u + 1013904223u) >> 8) / float(1 << 24); };
    std::vector<float> k(std::size_t(n) * 4), v(std::size_t(n) * 4);
    std::vector<std::int32_t> at(static_cast<std::size_t>(n));
    for (std::int64_t l = 0; l < n_layers; ++l)
        for (std::int64_t g = 0; g < n_kv_heads; ++g) {
            for (auto& x : k) x = next() - 0.5f;
            for (auto& x : v) x = next() - 0.5f;
            for (std::int32_t p = 0; p < n; ++p) at[std::size_t(p)] = p;
            cache.append(l, g, k.data(), v.data(), 4, at);
            for (std::int32_t s = 0; s < n; ++s) cache.head(l, g).received.data()[s] = next();
        }
    return cache;
}

KvHeadScores column(std::int64_t n_layers, std::int64_t n_kv_heads) {
    KvHeadScores scores;
    for (std::int64_t l = 0; l < n_layers; ++l) {
        auto& layer = scores.emplace_back();
        for (std::int64_t g = 0; g < n_kv_heads; ++g) layer.push_back(double((l * 7 + g * 3) % 5) / 4.0);
    }
    return scores;
}

bool holds(const KvHead& head, std::int32_t position) {
    return std::find(head.pos.data(), head.pos.data() + head.slots, position) != head.pos.data() + head.slots;
}

}  // namespace

TEST_CASE("kv policy: every budgeted policy keeps sinks and recent positions and respects each head's budget") {
    const Rope rope = test_rope();
    for (const char* spec :
         {"window:budget=25%", "h2o:budget=25%", "snapkv:budget=25%", "pyramid:budget=25%", "adakv:budget=25%",
          "headkv:budget=25%:by=x", "razor:budget=25%:by=x", "duo:budget=25%:by=x", "h2o:budget=20:sink=2:recent=5",
          "razor:budget=10%:by=x:protect=30%"}) {
        CAPTURE(spec);
        const auto policy = make_kv_policy(spec, column(3, 4));
        const HeadPolicySpec parsed = parse_head_policy(spec);
        KvCache cache = random_cache(3, 4, 80, parsed.method == "h2o" ? 0 : parsed.window);
        policy->apply(cache, {80, 80, &rope});
        REQUIRE(policy->budgets());
        const KvBudgets budgets = *policy->budgets();
        std::int64_t whole = 0;
        // Then decode's steps: one new token at a time, the policy after each.
        for (std::int32_t step = 0; step <= 12; ++step) {
            const std::int32_t next = 80 + step;
            for (std::int64_t l = 0; l < 3; ++l)
                for (std::int64_t g = 0; g < 4; ++g) {
                    const KvHead& head = cache.head(l, g);
                    const std::int32_t budget = budgets[std::size_t(l)][std::size_t(g)];
                    if (budget < 0) {
                        CHECK(head.slots == next);
                        whole += step == 0;
                        continue;
                    }
                    CHECK(budget >= parsed.sink + parsed.recent);
                    CHECK(head.slots <= budget);
                    for (std::int32_t p = 0; p < parsed.sink; ++p) CHECK(holds(head, p));
                    for (std::int32_t p = next - std::int32_t(parsed.recent); p < next; ++p) CHECK(holds(head, p));
                }
            if (step == 12) break;
            for (std::int64_t l = 0; l < 3; ++l)
                for (std::int64_t g = 0; g < 4; ++g) {
                    const float kv[4] = {0.1f, 0.2f, 0.3f, 0.4f};
                    cache.append(l, g, kv, kv, 4, std::vector<std::int32_t>{next});
                }
            policy->apply(cache, {next + 1, 1, &rope});
        }
        if (parsed.method == "razor" || parsed.method == "duo") CHECK(whole == std::llround(parsed.protect * 12));
        else CHECK(whole == 0);
    }
}

TEST_CASE("kv policy: budgets as shares, per layer (pyramid), per head (adakv, headkv), and the total they keep") {
    const Rope rope = test_rope();
    const auto kept = [&](const char* spec) {
        KvCache cache = random_cache(4, 4, 100, 32);
        make_kv_policy(spec, column(4, 4))->apply(cache, {100, 100, &rope});
        return cache;
    };
    KvCache uniform = kept("snapkv:budget=30%");
    CHECK(uniform.total_slots() == 16 * 30);
    KvCache pyramid = kept("pyramid:budget=30%");
    CHECK(pyramid.head(0, 0).slots > pyramid.head(3, 0).slots);  // lower layers keep more
    CHECK(std::abs(pyramid.total_slots() - 16 * 30) <= 16);      // the same total, but for rounding
    KvCache adakv = kept("adakv:budget=30%");
    CHECK(adakv.total_slots() == 16 * 30);
    std::int64_t least = 100, most = 0;
    for (std::int64_t g = 0; g < 4; ++g) least = std::min(least, adakv.head(1, g).slots), most = std::max(most, adakv.head(1, g).slots);
    CHECK(least >= 12);  // the floor: sink + recent, above 0.2 x 30
    KvCache headkv = kept("headkv:budget=30%:by=x");
    CHECK(headkv.head(0, 1).slots > headkv.head(0, 0).slots);  // column 3/4 against 0
}

TEST_CASE("kv policy: razor folds the dropped slots into one compensation slot: their mean at -(n+1)") {
    const Rope rope = test_rope();
    KvCache cache = random_cache(1, 2, 30);
    KvHeadScores scores{{1.0, 0.0}};
    KvCache before = random_cache(1, 2, 30);
    make_kv_policy("razor:budget=16:sink=2:recent=3:by=x:protect=50%", scores)->apply(cache, {30, 0, &rope});
    CHECK(cache.head(0, 0).slots == 30);  // protected
    const KvHead& head = cache.head(0, 1);
    // Budget: (16 x 2 - 30) / 1 = 2, raised to sink + recent + 1.
    REQUIRE(head.slots == 6);
    CHECK(positions(cache, 0, 1) == std::vector<std::int32_t>{0, 1, 27, 28, 29, -26});
    for (int d = 0; d < 4; ++d) {
        double k = 0, v = 0;
        for (int s = 2; s < 27; ++s) k += before.head(0, 1).k_f32()[s * 4 + d], v += before.head(0, 1).v_f32()[s * 4 + d];
        CHECK(head.k_f32()[5 * 4 + d] == doctest::Approx(k / 25).epsilon(1e-6));
        CHECK(head.v_f32()[5 * 4 + d] == doctest::Approx(v / 25).epsilon(1e-6));
    }
}

TEST_CASE("kv policy: a cache within its budgets is left bit for bit as it was (full, and nothing to drop)") {
    const Rope rope = test_rope();
    for (const char* spec : {"full", "razor:budget=100%:by=x", "h2o:budget=40", "snapkv:budget=100%"}) {
        CAPTURE(spec);
        KvCache cache = random_cache(2, 3, 40, 32), same = random_cache(2, 3, 40, 32);
        make_kv_policy(spec, column(2, 3))->apply(cache, {40, 40, &rope});
        for (std::int64_t l = 0; l < 2; ++l)
            for (std::int64_t g = 0; g < 3; ++g) {
                const KvHead &a = cache.head(l, g), &b = same.head(l, g);
                REQUIRE(a.slots == b.slots);
                CHECK(std::memcmp(a.k_f32(), b.k_f32(), sizeof(float) * std::size_t(a.slots * 4)) == 0);
                CHECK(std::memcmp(a.v_f32(), b.v_f32(), sizeof(float) * std::size_t(a.slots * 4)) == 0);
                CHECK(std::memcmp(a.pos.data(), b.pos.data(), sizeof(std::int32_t) * std::size_t(a.slots)) == 0);
            }
    }
}

TEST_CASE("kv policy: budgets and scores travel with the frame; the same policy goes on where it stopped") {
    const Rope rope = test_rope();
    KvCache cache = random_cache(2, 2, 50);
    std::vector<std::int32_t> tokens(50, 7);
    const Frame in = kv_to_frame(cache, {"m", tokens, "full"});
    const auto policy = make_kv_policy("headkv:budget=30%:by=x", column(2, 2));
    // The frame has no received tensors: a ranking policy says what it lacks.
    CHECK_THROWS_WITH_AS(compress_kv_frame(in, kv_from_frame(in, "in"), *policy, rope),
                         doctest::Contains("infer --kv writes it"), Error);
    KvFrameContents with_scores = kv_from_frame(in, "in");
    with_scores.received_recent.assign(2, std::vector<float>(100, 0.5f));
    with_scores.recent_queries = 32;
    const KvCompression done = compress_kv_frame(in, std::move(with_scores), *policy, rope);
    CHECK(done.frame.meta(keys::policy) == "headkv:budget=30%:sink=4:recent=8:window=32:pool=5:beta=1.5:by=x");
    const KvFrameContents back = kv_from_frame(done.frame, "out");
    CHECK(back.info.budgets == *policy->budgets());
    CHECK(!back.score.empty());
    CHECK(positions(back.cache, 0, 0).back() == 49);  // the last token stays for decode to run again
    // Without a head table, the policy goes on from the frame's budgets.
    const auto again = make_kv_policy(back.info.policy);
    KvFrameContents resumed = kv_from_frame(done.frame, "out");
    again->adopt(resumed.cache, back);
    CHECK(*again->budgets() == back.info.budgets);
    resumed.cache.truncate(49);  // as decode does: the last token runs again
    again->apply(resumed.cache, {49, 0, &rope});
    CHECK(resumed.cache.total_slots() == back.cache.total_slots() - 4);
    // A frame of the same policy without budgets needs the table.
    KvFrameContents bare = kv_from_frame(done.frame, "out");
    bare.info.budgets.clear();
    again->adopt(bare.cache, bare);
    CHECK_THROWS_WITH_AS(again->apply(bare.cache, {50, 0, &rope}), doctest::Contains("settles budgets from a head table"),
                         Error);
    // full: the frame comes back as it was, byte for byte.
    const auto full = make_kv_policy("full");
    const KvCompression same = compress_kv_frame(in, kv_from_frame(in, "in"), *full, rope);
    std::FILE* a = std::tmpfile();
    std::FILE* b = std::tmpfile();
    write_frame(a, in);
    write_frame(b, same.frame);
    CHECK(std::ftell(a) == std::ftell(b));
    std::rewind(a), std::rewind(b);
    std::vector<char> x(std::size_t(1) << 16), y(x.size());
    CHECK(std::fread(x.data(), 1, x.size(), a) == std::fread(y.data(), 1, y.size(), b));
    CHECK(x == y);
    std::fclose(a), std::fclose(b);
}

TEST_CASE("kv policy: specs are checked, part by part") {
    CHECK(make_kv_policy("razor:budget=30%:by=induction", column(1, 1))->name() ==
          "razor:budget=30%:sink=4:recent=8:protect=15%:by=induction");
    CHECK(kv_policy_table("razor:budget=30%:by=induction:scores=h.tsv").file == "h.tsv");
    CHECK(kv_policy_table("window:4:28").file.empty());
    for (const auto& [spec, message] : std::vector<std::pair<const char*, const char*>>{
             {"h2o", "needs a budget"},
             {"h2o:budget=0", "bad 'budget=0'"},
             {"h2o:budget=0%", "bad 'budget=0%'"},
             {"h2o:budget=101%", "bad 'budget=101%'"},
             {"h2o:budget=x", "bad 'budget=x'"},
             {"h2o:budget=10:beta=2", "h2o takes no 'beta'"},
             {"razor:budget=10", "needs the head table's column"},
             {"snapkv:budget=10:pool=4", "an odd count"},
             {"h2o:budget=10:sink", "KEY=VALUE"},
             {"headkv:budget=10:by=x:beta=0.5", "a number >= 1"},
             {"h2o:budget=5e-324%", "bad 'budget=5e-324%'"},  // a share that rounds to 0
             {"razor:budget=10:by=x:protect=1e-322%", "bad 'protect=1e-322%'"},
             {"h2o:budget=2147483648", "bad 'budget=2147483648'"},  // positions, and so counts, are int32
             {"window:4:9223372036854775807", "bad recent count"},
             {"full+q8+q4", "one type, not two"}}) {
        CAPTURE(spec);
        CHECK_THROWS_WITH_AS(make_kv_policy(spec), doctest::Contains(message), Error);
    }
}

TEST_CASE("quantized slots: the cache stores them as such, reads them back within half a step, and keeps them through slot edits") {
    for (const SlotType type : {SlotType::bf16, SlotType::q8, SlotType::q4}) {
        CAPTURE(slot_type_name(type));
        const KvCache f32 = random_cache(2, 3, 40);
        KvCache cache = random_cache(2, 3, 40);
        cache.set_slot_type(type);
        CHECK(cache.slot_type() == type);
        CHECK(cache.row_bytes() == slot_row_bytes(type, 4));
        CHECK(cache.slot_data_bytes() == 2 * 3 * 40 * slot_bytes(type, 4));
        std::vector<float> key(4), value(4);
        const auto close = [&](const KvCache& q, std::int64_t l, std::int64_t g, std::int64_t s, std::int64_t from) {
            q.read_key(l, g, s, key.data());
            q.read_value(l, g, s, value.data());
            const float k_step = slot_type_scaled(type) ? q.head(l, g).k_scale.data()[s] : 0.0f;
            const float v_step = slot_type_scaled(type) ? q.head(l, g).v_scale.data()[s] : 0.0f;
            for (std::int64_t d = 0; d < 4; ++d) {
                const float k = f32.head(l, g).k_f32()[from * 4 + d], v = f32.head(l, g).v_f32()[from * 4 + d];
                // Keys and values here are within 0.5: bf16's half ulp is below 2^-9.
                CHECK(std::abs(key[std::size_t(d)] - k) <= std::max(k_step / 2 * 1.0001f, 0x1p-9f));
                CHECK(std::abs(value[std::size_t(d)] - v) <= std::max(v_step / 2 * 1.0001f, 0x1p-9f));
            }
        };
        for (std::int64_t s = 0; s < 40; ++s) close(cache, 1, 2, s, s);
        // keep, in order and out of order, and truncate move scales with their rows.
        const std::vector<std::int64_t> ascending{0, 3, 17, 39}, shuffled{39, 0, 17};
        cache.keep(1, 2, ascending);
        for (std::size_t i = 0; i < ascending.size(); ++i) close(cache, 1, 2, std::int64_t(i), ascending[i]);
        cache.keep(1, 1, shuffled);
        for (std::size_t i = 0; i < shuffled.size(); ++i) close(cache, 1, 1, std::int64_t(i), shuffled[i]);
        cache.truncate(20);
        CHECK(positions(cache, 1, 2) == std::vector<std::int32_t>{0, 3, 17});
        // New slots arrive in the cache's type.
        const std::vector<float> row{0.25f, -0.5f, 0.125f, 0.0f};
        const std::int32_t at[] = {20};
        cache.append(0, 0, row.data(), row.data(), 4, at);
        cache.read_key(0, 0, cache.head(0, 0).slots - 1, key.data());
        for (std::size_t d = 0; d < 4; ++d) CHECK(std::abs(key[d] - row[d]) <= 0.5f / (type == SlotType::q4 ? 7 : 127));
        // copy_from takes the other's slot type.
        KvCache copy(cache.kv_head_counts(), 4, 64);
        copy.copy_from(cache);
        CHECK(copy.slot_type() == type);
        CHECK(std::memcmp(copy.head(1, 2).k.data(), cache.head(1, 2).k.data(), std::size_t(3 * cache.row_bytes())) == 0);
    }
}

TEST_CASE("quantized slots: a KV frame stores them as such with their scales, ragged, and reads them back bit for bit") {
    for (const SlotType type : {SlotType::f32, SlotType::bf16, SlotType::q8, SlotType::q4}) {
        CAPTURE(slot_type_name(type));
        KvCache cache = random_cache(2, 2, 30);
        cache.keep(0, 1, std::vector<std::int64_t>{0, 1, 2, 28, 29});  // ragged
        cache.set_slot_type(type);
        const Frame frame = kv_to_frame(cache, {"m", std::vector<std::int32_t>(30, 3), "full"});
        const std::int64_t slots = cache.total_slots();
        const DType dtype = type == SlotType::f32 ? DType::F32 : type == SlotType::bf16 ? DType::BF16
                            : type == SlotType::q8 ? DType::I8 : DType::U8;
        CHECK(frame.at("kv.0.k").dtype() == dtype);
        CHECK(frame.at("kv.0.k").shape() == Shape{35, type == SlotType::q4 ? 2 : 4});
        CHECK((frame.find("kv.0.k_scale") != nullptr) == slot_type_scaled(type));
        // The data is what the kept slots need (slot_bytes: rows, scales, positions), the counts and scores.
        const std::int64_t counts = 2 * 2 * 4, scores = slots * 4;
        CHECK(frame_data_bytes(frame) == slots * slot_bytes(type, 4) + counts + scores);
        const KvFrameContents back = kv_from_frame(frame, "frame");
        CHECK(back.cache.slot_type() == type);
        for (std::int64_t l = 0; l < 2; ++l)
            for (std::int64_t g = 0; g < 2; ++g) {
                const KvHead &a = cache.head(l, g), &b = back.cache.head(l, g);
                REQUIRE(a.slots == b.slots);
                CHECK(std::memcmp(a.k.data(), b.k.data(), std::size_t(a.slots * cache.row_bytes())) == 0);
                CHECK(std::memcmp(a.v.data(), b.v.data(), std::size_t(a.slots * cache.row_bytes())) == 0);
                if (slot_type_scaled(type)) {
                    CHECK(std::equal(a.k_scale.data(), a.k_scale.data() + a.slots, b.k_scale.data()));
                    CHECK(std::equal(a.v_scale.data(), a.v_scale.data() + a.slots, b.v_scale.data()));
                }
            }
        if (slot_type_scaled(type)) {
            Frame bad;
            bad.metadata = frame.metadata;
            for (const auto& [name, tensor] : frame)
                if (name != "kv.0.k_scale") bad.add(name, tensor);
            Tensor scale = Tensor::zeros(DType::F32, {frame.at("kv.0.k_scale").dim(0)});
            scale.mutable_data<float>()[0] = -1.0f;
            bad.add("kv.0.k_scale", std::move(scale));
            CHECK_THROWS_WITH_AS(kv_from_frame(bad, "bad"), doctest::Contains("kv.0.k_scale holds a negative"), Error);
        }
    }
}

TEST_CASE("quantized policies: +TYPE after any policy, the eviction acting first, then every slot stored in TYPE") {
    const Rope rope = test_rope();
    CHECK(make_kv_policy("full+q8")->name() == "full+q8");
    CHECK(make_kv_policy("window:4:28+q4")->name() == "window:4:28+q4");
    CHECK(make_kv_policy("razor:budget=30%:by=x+bf16", column(1, 1))->name() ==
          "razor:budget=30%:sink=4:recent=8:protect=15%:by=x+bf16");
    CHECK(eviction_policy("razor:budget=30%:by=x+q8") == "razor:budget=30%:by=x");
    CHECK(kv_policy_table("razor:budget=30%:by=x:scores=a+b.tsv+q8").file == "a+b.tsv");
    CHECK(make_kv_policy("full+q8")->reads_whole_prompt());
    CHECK_THROWS_WITH_AS(make_kv_policy("full+f32"), doctest::Contains("without a suffix"), Error);
    CHECK_THROWS_WITH_AS(make_kv_policy("full+q3"), doctest::Contains("unknown KV cache policy 'full+q3'"), Error);
    CHECK_THROWS_WITH_AS(make_kv_policy("+q8"), doctest::Contains("follows a policy"), Error);
    // razor+q8 keeps the slots razor keeps, quantized.
    KvCache plain = random_cache(1, 2, 30), quantized = random_cache(1, 2, 30);
    const KvHeadScores scores{{1.0, 0.0}};
    make_kv_policy("razor:budget=16:sink=2:recent=3:by=x:protect=50%", scores)->apply(plain, {30, 0, &rope});
    const auto policy = make_kv_policy("razor:budget=16:sink=2:recent=3:by=x:protect=50%+q8", scores);
    policy->apply(quantized, {30, 0, &rope});
    CHECK(quantized.slot_type() == SlotType::q8);
    CHECK(positions(quantized, 0, 1) == positions(plain, 0, 1));
    CHECK(quantized.slot_data_bytes() == plain.total_slots() * slot_bytes(SlotType::q8, 4));
    // A new sequence starts in f32 again.
    policy->start(quantized);
    CHECK(quantized.slot_type() == SlotType::f32);
}

TEST_CASE("quantized policies: compress-kv's frame is within 2% of what its kept slots need, and the policy goes on from it") {
    const Rope rope = test_rope();
    KvCache cache = random_cache(2, 2, 200);
    cache.track_received(false);  // no scores: these policies do not rank
    const Frame in = kv_to_frame(cache, {"m", std::vector<std::int32_t>(200, 7), "full"});
    for (const char* spec : {"full+q8", "window:budget=30%+q4", "razor:budget=10%:by=x+q8", "window:4:28+bf16"}) {
        CAPTURE(spec);
        const auto policy = make_kv_policy(spec, column(2, 2));
        const KvCompression done = compress_kv_frame(in, kv_from_frame(in, "in"), *policy, rope);
        CHECK(done.frame.meta(keys::policy) == policy->name());
        const KvFrameContents back = kv_from_frame(done.frame, "out");
        const std::int64_t need = back.cache.slot_data_bytes();
        CHECK(double(frame_data_bytes(done.frame)) <= 1.02 * double(need));
        std::int64_t after = 0;
        for (const auto& layer : done.layers) after += layer.bytes_after;
        CHECK(after == frame_data_bytes(done.frame));
        // Going on from the frame: the same type for the slots to come, the same budgets.
        const auto again = make_kv_policy(back.info.policy);
        KvFrameContents resumed = kv_from_frame(done.frame, "out");
        again->adopt(resumed.cache, back);
        resumed.cache.truncate(199);
        again->apply(resumed.cache, {199, 0, &rope});
        CHECK(resumed.cache.slot_type() == back.cache.slot_type());
        CHECK(resumed.cache.total_slots() == back.cache.total_slots() - 4);
    }
}
