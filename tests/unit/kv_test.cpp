// lib/kv: slot edits of the per-head cache and KV frames, ragged heads included.
#include <doctest/doctest.h>

#include <vector>

#include "kv/kv_cache.hpp"
#include "kv/kv_frame.hpp"
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
    CHECK(back.info.tokens == std::vector<std::int32_t>{1, 2, 3, 4});
    CHECK(positions(back.cache, 0, 1) == std::vector<std::int32_t>{0, 3});
    CHECK(back.cache.head(0, 1).k.data()[4] == 301.0f);
    CHECK(back.cache.kv_heads() == std::vector<std::int64_t>{2, 0});
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
