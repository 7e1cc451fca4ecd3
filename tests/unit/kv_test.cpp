// lib/kv: slot edits of the per-head cache and KV frames, ragged heads included.
#include <doctest/doctest.h>

#include <cmath>
#include <vector>

#include "kv/kv_cache.hpp"
#include "kv/kv_frame.hpp"
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
            h.k.data()[s * std::size_t(cache.head_dim()) + std::size_t(d)] = float(100 * positions[s] + d);
            h.v.data()[s * std::size_t(cache.head_dim()) + std::size_t(d)] = -float(100 * positions[s] + d);
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
    CHECK(std::vector<float>(h.k.data(), h.k.data() + 6) == std::vector<float>{0, 1, 3, 4, 7, 8});
    CHECK(std::vector<float>(h.v.data(), h.v.data() + 6) == std::vector<float>{-0.0f, -1, -3, -4, -7, -8});
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
    CHECK(cache.head(0, 1).k.data()[4] == 0.0f);  // slot 1 now holds position 0's key
    CHECK(cache.total_slots() == 8);
}

TEST_CASE("keep selects slots in any order; storage grows keeping the contents") {
    KvCache cache({1}, 2, 2);
    fill(cache, 0, 0, {0, 1, 2, 3, 4, 5});
    CHECK(cache.head(0, 0).capacity >= 6);
    const std::vector<std::int64_t> sink_and_recent = {0, 4, 5};
    cache.keep(0, 0, sink_and_recent);
    CHECK(positions(cache, 0, 0) == std::vector<std::int32_t>{0, 4, 5});
    CHECK(cache.head(0, 0).v.data()[3] == -401.0f);
    const std::vector<std::int64_t> reversed = {2, 0};
    cache.keep(0, 0, reversed);
    CHECK(positions(cache, 0, 0) == std::vector<std::int32_t>{5, 0});
    const std::vector<std::int64_t> outside = {3};
    CHECK_THROWS(cache.keep(0, 0, outside));
    cache.reserve_more(100);
    CHECK(positions(cache, 0, 0) == std::vector<std::int32_t>{5, 0});
    CHECK(cache.head(0, 0).k.data()[0] == 500.0f);
}

TEST_CASE("a ragged cache survives a KV frame round trip, with its padding") {
    KvCache cache({2, 0}, 3);
    fill(cache, 0, 0, {0, 1, 2, 3});
    fill(cache, 0, 1, {0, 3});
    const Frame frame = kv_to_frame(cache, {"0123456789abcdef", {1, 2, 3, 4}, "window"});
    CHECK(frame.meta(keys::kind) == "kv");
    CHECK(frame.meta(keys::tokens) == "1 2 3 4");
    CHECK(frame.at("kv.0.k").shape() == Shape{2, 4, 3});
    CHECK(frame.at("kv.1.k").shape() == Shape{0, 0, 3});
    const auto pos = frame.at("kv.0.pos").data<std::int32_t>();
    CHECK(std::vector<std::int32_t>(pos.begin(), pos.end()) == std::vector<std::int32_t>{0, 1, 2, 3, 0, 3, -1, -1});
    const KvFrameContents back = kv_from_frame(frame, "frame");
    CHECK(back.info.model == "0123456789abcdef");
    CHECK(back.info.policy == "window");
    CHECK(kv_frame_policy(frame) == "window");
    Frame unnamed = frame;
    unnamed.metadata.erase(std::string(keys::policy));
    CHECK(kv_frame_policy(unnamed) == "full");
    CHECK(back.info.tokens == std::vector<std::int32_t>{1, 2, 3, 4});
    CHECK(positions(back.cache, 0, 1) == std::vector<std::int32_t>{0, 3});
    CHECK(back.cache.head(0, 1).k.data()[4] == 301.0f);
    CHECK(back.cache.kv_head_counts() == std::vector<std::int64_t>{2, 0});
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
    Frame no_pos;
    no_pos.metadata = frame.metadata;
    no_pos.add("kv.0.k", frame.at("kv.0.k"));
    no_pos.add("kv.0.v", frame.at("kv.0.v"));
    CHECK_THROWS_WITH_AS(kv_from_frame(no_pos, "f"), doctest::Contains("has kv.0.k but not kv.0.v and kv.0.pos"), Error);
}

TEST_CASE("policies are made back from their heads.policy name") {
    auto full = make_kv_policy("full");
    CHECK(full->name() == "full");
    KvCache cache({1}, 2);
    fill(cache, 0, 0, {0, 1, 2});
    full->apply(cache, {3, 1});
    CHECK(cache.total_slots() == 3);
    CHECK_THROWS_WITH_AS(make_kv_policy("razor:0.3"), "unknown KV cache policy 'razor:0.3' (heads knows: full, window:SINK:RECENT)", Error);
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
        std::copy(key.begin(), key.end(), head.k.data() + s * kHeadDim);
        for (int i = 0; i < kHeadDim; ++i) head.v.data()[s * kHeadDim + i] = float(s);
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
        CHECK(head.v.data()[s * kHeadDim] == float(tokens[s]));  // the right slots survived
        const auto expected = key_at(tokens[s], head.pos.data()[s]);
        for (int i = 0; i < kHeadDim; ++i) CHECK(head.k.data()[s * kHeadDim + i] == doctest::Approx(expected[std::size_t(i)]).epsilon(1e-5));
    }
    // One more step: the sinks move along with the window.
    const auto key = key_at(10, 10);
    KvHead& h = cache.head(0, 0);
    std::copy(key.begin(), key.end(), h.k.data() + 5 * kHeadDim);
    h.pos.data()[5] = 10;
    h.slots = 6;
    window->apply(cache, {11, 1, &rope});
    CHECK(slot_positions(cache) == std::vector<std::int32_t>{6, 7, 8, 9, 10});
    const auto sink = key_at(0, 6);
    for (int i = 0; i < kHeadDim; ++i) CHECK(h.k.data()[i] == doctest::Approx(sink[std::size_t(i)]).epsilon(1e-5));
}

TEST_CASE("kv policy: shift_positions moves and re-rotates what follows a position") {
    KvCache cache = filled_cache(6);
    shift_positions(cache, 4, -3, test_rope());
    CHECK(slot_positions(cache) == std::vector<std::int32_t>{0, 1, 2, 3, 1, 2});
    const KvHead& head = cache.head(0, 0);
    const auto expected = key_at(5, 2);
    for (int i = 0; i < kHeadDim; ++i) CHECK(head.k.data()[5 * kHeadDim + i] == doctest::Approx(expected[std::size_t(i)]).epsilon(1e-5));
}
