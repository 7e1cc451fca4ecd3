// attention() against attention_reference(): outputs and every probe, over
// head layouts, head sizes, query counts on both sides of the block threshold,
// ragged caches, tree masks, sliding windows, unused and synthetic slots.
#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <random>
#include <tuple>
#include <vector>

#include "attention/attention.hpp"
#include "attention/slot_type.hpp"

using namespace heads;

namespace {

struct Case {
    std::vector<std::int32_t> kv_head_of;
    std::int64_t head_dim;
    std::int64_t n_new;
    std::vector<std::int64_t> prefix;  // old slots per KV head (ragged when they differ)
    bool tree_mask = false;
    std::int64_t window = 0;
    bool holes = false;  // some old slots unused (-1) or synthetic (-2)
    bool mask_a_head = false;
    bool repeat = false;  // tokens form BOS + span + span
};

struct Built {
    std::vector<std::vector<float>> k, v;
    std::vector<std::vector<std::int32_t>> pos;
    std::vector<KvHeadView> views;
    std::vector<float> q;
    std::vector<std::int32_t> positions, tokens;
    std::vector<std::uint8_t> mask, head_off;
};

Built build(const Case& c, unsigned seed) {
    std::mt19937 rng(seed);
    std::normal_distribution<float> normal(0.0f, 1.0f);
    Built b;
    const std::size_t n_kv = c.prefix.size(), n_heads = c.kv_head_of.size();
    const std::int64_t hd = c.head_dim;
    const std::int64_t longest = *std::max_element(c.prefix.begin(), c.prefix.end());
    for (std::int64_t t = 0; t < longest + c.n_new; ++t) b.tokens.push_back(std::int32_t(rng() % 7));  // repeats
    const std::int64_t span = (longest + c.n_new - 1) / 2;
    if (c.repeat)  // BOS, then a span twice
        for (std::int64_t t = 0; t < span; ++t) b.tokens[std::size_t(1 + span + t)] = b.tokens[std::size_t(1 + t)];
    for (std::int64_t i = 0; i < c.n_new; ++i) b.positions.push_back(std::int32_t(longest + (c.tree_mask ? i / 2 : i)));
    for (std::size_t g = 0; g < n_kv; ++g) {
        const std::int64_t slots = c.prefix[g] + c.n_new;
        std::vector<float> k(std::size_t(slots * hd)), v(std::size_t(slots * hd));
        for (auto& x : k) x = normal(rng) * 2.0f;
        for (auto& x : v) x = normal(rng);
        std::vector<std::int32_t> pos(static_cast<std::size_t>(slots));
        // A ragged head keeps the last prefix[g] of `longest` old positions.
        for (std::int64_t s = 0; s < c.prefix[g]; ++s) pos[std::size_t(s)] = std::int32_t(longest - c.prefix[g] + s);
        if (c.holes && c.prefix[g] > 2) {
            pos[1] = -1;
            pos[2] = -2;
        }
        for (std::int64_t i = 0; i < c.n_new; ++i) pos[std::size_t(c.prefix[g] + i)] = b.positions[std::size_t(i)];
        b.k.push_back(std::move(k));
        b.v.push_back(std::move(v));
        b.pos.push_back(std::move(pos));
    }
    for (std::size_t g = 0; g < n_kv; ++g)
        b.views.push_back({b.k[g].data(), b.v[g].data(), b.pos[g].data(), c.prefix[g] + c.n_new});
    b.q.resize(std::size_t(c.n_new) * (n_heads * std::size_t(hd) + 5));  // padded rows: q_stride != n_heads*hd
    for (auto& x : b.q) x = normal(rng);
    if (c.tree_mask) {
        b.mask.assign(std::size_t(c.n_new * c.n_new), 0);
        for (std::int64_t i = 0; i < c.n_new; ++i) {
            b.mask[std::size_t(i * c.n_new + i)] = 1;
            for (std::int64_t j = 0; j < i; ++j) b.mask[std::size_t(i * c.n_new + j)] = (rng() % 3) != 0;
        }
    }
    if (c.mask_a_head) {
        b.head_off.assign(n_heads, 0);
        b.head_off[n_heads / 2] = 1;
    }
    return b;
}

AttentionArgs plain_args(float* out, const Built& b, std::int64_t out_stride, std::int64_t q_stride, std::int64_t n_new,
                         std::int64_t head_dim, std::span<const std::int32_t> kv_head_of) {
    AttentionArgs args;
    args.out = out;
    args.out_stride = out_stride;
    args.q = b.q.data();
    args.q_stride = q_stride;
    args.n_new = n_new;
    args.head_dim = head_dim;
    args.kv_head_of = kv_head_of;
    args.kv = b.views;
    args.positions = b.positions;
    return args;
}

void compare(const Case& c, unsigned seed, bool probes) {
    Built b = build(c, seed);
    const std::int64_t n_heads = std::int64_t(c.kv_head_of.size()), hd = c.head_dim, n_kv = std::int64_t(c.prefix.size());
    const std::int64_t q_stride = n_heads * hd + 5;
    std::int64_t max_slots = 0;
    for (auto& view : b.views) max_slots = std::max(max_slots, view.slots);
    struct Outputs {
        std::vector<float> out, probs, received, recent;
        std::vector<HeadStatSums> stats;
    };
    auto run = [&](bool reference) {
        Outputs o;
        o.out.assign(std::size_t(c.n_new * n_heads * hd), 99.0f);
        AttentionArgs args = plain_args(o.out.data(), b, n_heads * hd, q_stride, c.n_new, hd, c.kv_head_of);
        args.mask = b.mask.empty() ? nullptr : b.mask.data();
        args.sliding_window = c.window;
        args.head_off = b.head_off;
        if (probes) {
            o.probs.assign(std::size_t(n_heads * c.n_new * max_slots), 0.0f);
            o.received.assign(std::size_t(n_kv * max_slots), 0.0f);
            o.recent.assign(std::size_t(n_kv * max_slots), 0.0f);
            o.stats.assign(std::size_t(n_heads), {});
            args.probe = {o.probs.data(), max_slots, o.received.data(), o.recent.data(), max_slots, 5, o.stats.data(), b.tokens};
        }
        Context ctx(2);
        AttentionWorkspace ws;
        (reference ? attention_reference : attention)(ctx, ws, args);
        return o;
    };
    const Outputs fast = run(false), slow = run(true);
    double worst = 0;
    for (std::size_t i = 0; i < fast.out.size(); ++i) worst = std::max(worst, double(std::abs(fast.out[i] - slow.out[i])));
    // Values are N(0, 1): an output is a convex mix of them, so 1e-5 absolute is float rounding.
    CHECK(worst < 1e-5);
    if (!probes) return;
    double worst_probe = 0;
    for (std::size_t i = 0; i < fast.probs.size(); ++i) worst_probe = std::max(worst_probe, double(std::abs(fast.probs[i] - slow.probs[i])));
    for (std::size_t i = 0; i < fast.received.size(); ++i) {
        worst_probe = std::max(worst_probe, double(std::abs(fast.received[i] - slow.received[i])) / double(c.n_new));
        worst_probe = std::max(worst_probe, double(std::abs(fast.recent[i] - slow.recent[i])) / 5.0);
    }
    CHECK(worst_probe < 1e-5);
    for (std::int64_t h = 0; h < n_heads; ++h) {
        const auto &x = fast.stats[std::size_t(h)], &y = slow.stats[std::size_t(h)];
        CHECK(x.queries == y.queries);
        CHECK(x.prev_queries == y.prev_queries);
        CHECK(x.repeat_queries == y.repeat_queries);
        CHECK(x.entropy == doctest::Approx(y.entropy).epsilon(1e-4));
        CHECK(x.sink == doctest::Approx(y.sink).epsilon(1e-4));
        CHECK(x.prev_token == doctest::Approx(y.prev_token).epsilon(1e-4));
        CHECK(x.echo == doctest::Approx(y.echo).epsilon(1e-4));
        CHECK(x.induction == doctest::Approx(y.induction).epsilon(1e-4));
    }
}

std::vector<std::int32_t> grouped(int n_heads, int n_kv) {
    std::vector<std::int32_t> map;
    for (int h = 0; h < n_heads; ++h) map.push_back(h / (n_heads / n_kv));
    return map;
}

}  // namespace

TEST_CASE("prefill and decode over MHA, GQA and MQA, head sizes 8 to 128") {
    unsigned seed = 1;
    for (std::int64_t hd : {8, 32, 64, 80, 128})
        for (auto [n_heads, n_kv] : {std::pair{4, 4}, {8, 2}, {6, 1}})
            for (std::int64_t n_new : {1, 3, 7, 8, 65, 130}) {
                CAPTURE(hd);
                CAPTURE(n_heads);
                CAPTURE(n_kv);
                CAPTURE(n_new);
                Case c{grouped(n_heads, n_kv), hd, n_new, std::vector<std::int64_t>(std::size_t(n_kv), n_new == 1 ? 37 : 0)};
                compare(c, seed++, false);
            }
}

TEST_CASE("a long prefill crosses many key blocks") {
    compare({grouped(4, 2), 64, 300, {0, 0}}, 7, false);
    compare({grouped(2, 1), 32, 257, {40}}, 8, false);
}

TEST_CASE("pruned layouts: any map from query heads to KV heads, idle KV heads") {
    compare({{2, 0, 2, 2, 1}, 32, 20, {5, 5, 5}}, 11, true);
    compare({{1, 1}, 16, 4, {3, 9}}, 12, true);  // KV head 0 serves nobody
}

TEST_CASE("ragged caches, unused and synthetic slots, masked heads") {
    for (std::int64_t n_new : {1, 2, 12, 70}) {
        CAPTURE(n_new);
        compare({grouped(4, 2), 32, n_new, {50, 13}, false, 0, true, true}, 21, false);
        compare({grouped(4, 2), 32, n_new, {50, 13}, false, 0, true, true}, 22, true);
    }
}

TEST_CASE("tree masks among the new tokens") {
    for (std::int64_t n_new : {2, 6, 9, 40}) {
        CAPTURE(n_new);
        compare({grouped(4, 4), 16, n_new, {10, 10, 10, 10}, true}, 31, false);
        compare({grouped(4, 1), 16, n_new, {10}, true}, 32, true);
    }
}

TEST_CASE("sliding window") {
    for (std::int64_t n_new : {1, 5, 20, 200}) {
        CAPTURE(n_new);
        compare({grouped(4, 2), 32, n_new, {30, 30}, false, 16}, 41, false);
        compare({grouped(4, 2), 32, n_new, {30, 30}, false, 16}, 42, true);
    }
}

TEST_CASE("probes on a plain prefill: every row sums to one, received mass adds up") {
    const Case c{grouped(4, 2), 16, 40, {0, 0}};
    compare(c, 51, true);
    Built b = build(c, 52);
    std::vector<float> out(40 * 4 * 16), probs(4 * 40 * 40, 0.0f), received(2 * 40, 0.0f);
    std::vector<HeadStatSums> stats(4);
    AttentionArgs args = plain_args(out.data(), b, 64, 64 + 5, 40, 16, c.kv_head_of);
    args.probe = {probs.data(), 40, received.data(), nullptr, 40, 32, stats.data(), b.tokens};
    Context ctx(1);
    AttentionWorkspace ws;
    attention(ctx, ws, args);
    for (int h = 0; h < 4; ++h)
        for (int i = 0; i < 40; ++i) {
            double total = 0;
            for (int s = 0; s < 40; ++s) {
                total += probs[std::size_t((h * 40 + i) * 40 + s)];
                if (s > i) CHECK(probs[std::size_t((h * 40 + i) * 40 + s)] == 0.0f);
            }
            CHECK(total == doctest::Approx(1.0).epsilon(1e-5));
        }
    double received_total = 0;
    for (float x : received) received_total += x;
    CHECK(received_total == doctest::Approx(4 * 40).epsilon(1e-5));  // every query of every head gives 1
    CHECK(stats[0].queries == 40);
    CHECK(stats[0].prev_queries == 39);  // positions 1..39
}

TEST_CASE("head statistics on a repeat sequence") {
    Case c{grouped(4, 2), 16, 41, {0, 0}};
    c.repeat = true;
    compare(c, 71, true);
    Built b = build(c, 71);
    CHECK(repeat_span(b.tokens) == 20);
    std::vector<float> out(41 * 4 * 16);
    std::vector<HeadStatSums> stats(4);
    AttentionArgs args = plain_args(out.data(), b, 64, 64 + 5, 41, 16, c.kv_head_of);
    args.probe.stats = stats.data();
    args.probe.tokens = b.tokens;
    Context ctx(1);
    AttentionWorkspace ws;
    attention(ctx, ws, args);
    CHECK(stats[1].repeat_queries == 20);
    CHECK(stats[1].induction > 0);
    CHECK(stats[1].echo > 0);
    b.tokens[25] += 1;  // no longer a repeat sequence
    CHECK(repeat_span(b.tokens) == 0);
}

TEST_CASE("same result for any thread count, bit-identical for the same count") {
    const Case c{grouped(8, 2), 64, 150, {0, 0}};
    Built b = build(c, 61);
    auto run = [&](int threads) {
        std::vector<float> out(150 * 8 * 64);
        AttentionArgs args = plain_args(out.data(), b, 512, 512 + 5, 150, 64, c.kv_head_of);
        Context ctx(threads);
        AttentionWorkspace ws;
        attention(ctx, ws, args);
        return out;
    };
    const auto one = run(1), two = run(2), again = run(2);
    CHECK(two == again);
    double worst = 0;
    for (std::size_t i = 0; i < one.size(); ++i) worst = std::max(worst, double(std::abs(one[i] - two[i])));
    CHECK(worst < 1e-6);
}

TEST_CASE("a compensation slot at -(n+1) attends as n copies of its key and value, fast path and reference") {
    std::mt19937 rng(77);
    std::normal_distribution<float> normal(0.0f, 1.0f);
    const std::int64_t hd = 8, real = 5;
    for (const std::int64_t n_new : {1, 3, 40})
        for (const std::int32_t n : {1, 2, 9}) {
            CAPTURE(n_new);
            CAPTURE(n);
            std::vector<float> k_mean(hd), v_mean(hd), q(std::size_t(n_new * hd));
            for (auto& x : k_mean) x = normal(rng);
            for (auto& x : v_mean) x = normal(rng);
            for (auto& x : q) x = normal(rng) * 2.0f;
            // copies: the real slots, n slots holding the mean, the new tokens; folded: one slot for the n.
            std::vector<float> k_copies, v_copies, k_folded, v_folded;
            std::vector<std::int32_t> pos_copies, pos_folded;
            const auto add = [&](std::vector<float>& k, std::vector<float>& v, std::vector<std::int32_t>& pos,
                                 const float* kx, const float* vx, std::int32_t p) {
                k.insert(k.end(), kx, kx + hd), v.insert(v.end(), vx, vx + hd), pos.push_back(p);
            };
            std::vector<float> row_k(hd), row_v(hd);
            std::vector<std::vector<float>> real_k, real_v;
            for (std::int64_t s = 0; s < real + n_new; ++s) {
                for (auto& x : row_k) x = normal(rng);
                for (auto& x : row_v) x = normal(rng);
                real_k.push_back(row_k), real_v.push_back(row_v);
            }
            for (std::int64_t s = 0; s < real; ++s) {
                add(k_copies, v_copies, pos_copies, real_k[std::size_t(s)].data(), real_v[std::size_t(s)].data(), std::int32_t(s));
                add(k_folded, v_folded, pos_folded, real_k[std::size_t(s)].data(), real_v[std::size_t(s)].data(), std::int32_t(s));
            }
            for (std::int32_t c = 0; c < n; ++c) add(k_copies, v_copies, pos_copies, k_mean.data(), v_mean.data(), std::int32_t(real + c));
            add(k_folded, v_folded, pos_folded, k_mean.data(), v_mean.data(), -(n + 1));
            std::vector<std::int32_t> positions;
            for (std::int64_t i = 0; i < n_new; ++i) {
                const auto p = std::int32_t(real + n + i);
                positions.push_back(p);
                add(k_copies, v_copies, pos_copies, real_k[std::size_t(real + i)].data(), real_v[std::size_t(real + i)].data(), p);
                add(k_folded, v_folded, pos_folded, real_k[std::size_t(real + i)].data(), real_v[std::size_t(real + i)].data(), p);
            }
            const std::vector<std::int32_t> kv_head_of{0, 0};
            const auto run = [&](const std::vector<float>& k, const std::vector<float>& v, const std::vector<std::int32_t>& pos,
                                 bool reference) {
                std::vector<float> out(std::size_t(n_new * 2 * hd), 99.0f), two_q;
                for (std::int64_t i = 0; i < n_new; ++i)
                    for (int h = 0; h < 2; ++h) two_q.insert(two_q.end(), q.begin() + i * hd, q.begin() + (i + 1) * hd);
                const std::vector<KvHeadView> views{{k.data(), v.data(), pos.data(), std::int64_t(pos.size())}};
                AttentionArgs args;
                args.out = out.data(), args.out_stride = 2 * hd, args.q = two_q.data(), args.q_stride = 2 * hd;
                args.n_new = n_new, args.head_dim = hd, args.kv_head_of = kv_head_of, args.kv = views;
                args.positions = positions;
                Context ctx(1);
                AttentionWorkspace ws;
                (reference ? attention_reference : attention)(ctx, ws, args);
                return out;
            };
            for (const bool reference : {false, true}) {
                const auto copies = run(k_copies, v_copies, pos_copies, reference);
                const auto folded = run(k_folded, v_folded, pos_folded, reference);
                double worst = 0;
                for (std::size_t i = 0; i < copies.size(); ++i) worst = std::max(worst, double(std::abs(copies[i] - folded[i])));
                CHECK(worst <= (reference ? 1e-6 : 2e-5));
            }
        }
}

namespace {

const std::vector<SlotType> kStoredTypes{SlotType::f32, SlotType::bf16, SlotType::q8, SlotType::q4};

// The slots of `b` stored in `type`, and read back into f32.
struct Stored {
    std::vector<std::vector<std::uint8_t>> k, v;
    std::vector<std::vector<float>> k_scale, v_scale, k_back, v_back;
    std::vector<KvHeadView> views, back_views;
};

Stored store(const Built& b, SlotType type, std::int64_t hd) {
    Stored st;
    const std::int64_t row = slot_row_bytes(type, hd);
    for (std::size_t g = 0; g < b.views.size(); ++g) {
        const std::int64_t slots = b.views[g].slots;
        for (auto [from, to, scale, back] : {std::tuple{&b.k[g], &st.k, &st.k_scale, &st.k_back},
                                             {&b.v[g], &st.v, &st.v_scale, &st.v_back}}) {
            to->emplace_back(std::size_t(slots * row));
            scale->emplace_back(std::size_t(slots));
            back->emplace_back(std::size_t(slots * hd));
            for (std::int64_t s = 0; s < slots; ++s) {
                quantize_row(type, from->data() + s * hd, hd, to->back().data() + s * row, scale->back()[std::size_t(s)]);
                dequantize_row(type, to->back().data() + s * row, scale->back()[std::size_t(s)], hd,
                               back->back().data() + s * hd);
            }
        }
    }
    for (std::size_t g = 0; g < b.views.size(); ++g) {
        const bool scaled = slot_type_scaled(type);
        st.views.push_back({st.k[g].data(), st.v[g].data(), b.pos[g].data(), b.views[g].slots, type,
                            scaled ? st.k_scale[g].data() : nullptr, scaled ? st.v_scale[g].data() : nullptr});
        st.back_views.push_back({st.k_back[g].data(), st.v_back[g].data(), b.pos[g].data(), b.views[g].slots});
    }
    return st;
}

}  // namespace

TEST_CASE("slot types: a row read back is within half a step of what was stored") {
    std::mt19937 rng(91);
    std::normal_distribution<float> normal(0.0f, 1.0f);
    for (const SlotType type : kStoredTypes)
        for (std::int64_t n : {1, 2, 7, 8, 64, 128}) {
            CAPTURE(slot_type_name(type));
            CAPTURE(n);
            for (int trial = 0; trial < 50; ++trial) {
                std::vector<float> x(static_cast<std::size_t>(n)), back(static_cast<std::size_t>(n));
                for (auto& value : x) value = normal(rng) * (trial % 5 == 0 ? 1e3f : trial % 5 == 1 ? 1e-3f : 1.0f);
                if (trial == 3) x[0] *= 100.0f;  // one outlier sets the scale
                if (trial == 4) std::fill(x.begin(), x.end(), 0.0f);
                std::vector<std::uint8_t> row(std::size_t(slot_row_bytes(type, n)));
                float scale = -1;
                quantize_row(type, x.data(), n, row.data(), scale);
                dequantize_row(type, row.data(), scale, n, back.data());
                float top = 0;
                for (auto value : x) top = std::max(top, std::abs(value));
                for (std::int64_t d = 0; d < n; ++d) {
                    const float err = std::abs(back[std::size_t(d)] - x[std::size_t(d)]);
                    switch (type) {
                        case SlotType::f32: CHECK(err == 0.0f); break;
                        // bf16 keeps 8 significant bits: half an ulp is at most 2^-8 of the value.
                        case SlotType::bf16: CHECK(err <= std::abs(x[std::size_t(d)]) * 0x1p-8f); break;
                        // Half a step, plus the float rounding of q·scale (an ulp of the value).
                        default:
                            CHECK(scale == doctest::Approx(top / (type == SlotType::q8 ? 127.0f : 7.0f)).epsilon(1e-6));
                            CHECK(err <= scale / 2 + std::abs(x[std::size_t(d)]) * 0x1p-23f);
                    }
                }
            }
        }
}

TEST_CASE("slot types: sizes, names, and q4's layout (element 2j in the low nibble of byte j, stored as q + 8)") {
    CHECK(slot_row_bytes(SlotType::f32, 64) == 256);
    CHECK(slot_row_bytes(SlotType::bf16, 64) == 128);
    CHECK(slot_row_bytes(SlotType::q8, 64) == 64);
    CHECK(slot_row_bytes(SlotType::q4, 64) == 32);
    CHECK(slot_row_bytes(SlotType::q4, 7) == 4);
    CHECK(slot_bytes(SlotType::q8, 64) == 2 * 64 + 2 * 4 + 4);
    CHECK(slot_bytes(SlotType::f32, 64) == 2 * 256 + 4);
    for (const SlotType type : kStoredTypes) CHECK(slot_type_from_name(slot_type_name(type)) == type);
    CHECK_FALSE(slot_type_from_name("q2"));
    const float x[] = {7, -7, 0, 3.5f};
    std::uint8_t row[2];
    float scale = 0;
    quantize_row(SlotType::q4, x, 4, row, scale);
    CHECK(scale == 1.0f);
    CHECK(row[0] == ((8 - 7) << 4 | (8 + 7)));
    CHECK(row[1] == ((8 + 4) << 4 | 8));  // 3.5 rounds away from zero
}

TEST_CASE("attention over stored slots equals attention over their values read back into f32") {
    unsigned seed = 400;
    for (const SlotType type : kStoredTypes)
        for (std::int64_t n_new : {1, 3, 8, 40})
            for (const bool holes : {false, true}) {
                CAPTURE(slot_type_name(type));
                CAPTURE(n_new);
                CAPTURE(holes);
                const Case c{grouped(6, 2), 64, n_new, {45, 17}, false, 0, holes, holes};
                const Built b = build(c, seed++);
                const Stored st = store(b, type, c.head_dim);
                const std::int64_t n_heads = 6, hd = c.head_dim, q_stride = n_heads * hd + 5;
                const auto run = [&](const std::vector<KvHeadView>& views, bool reference) {
                    std::vector<float> out(std::size_t(n_new * n_heads * hd), 99.0f);
                    AttentionArgs args = plain_args(out.data(), b, n_heads * hd, q_stride, n_new, hd, c.kv_head_of);
                    args.kv = views;
                    args.head_off = b.head_off;
                    Context ctx(2);
                    AttentionWorkspace ws;
                    (reference ? attention_reference : attention)(ctx, ws, args);
                    return out;
                };
                const auto stored = run(st.views, false), back = run(st.back_views, false);
                const auto oracle = run(st.views, true);
                double worst = 0, worst_oracle = 0;
                for (std::size_t i = 0; i < stored.size(); ++i) {
                    worst = std::max(worst, double(std::abs(stored[i] - back[i])));
                    worst_oracle = std::max(worst_oracle, double(std::abs(stored[i] - oracle[i])));
                }
                // The same numbers in another order: float rounding only (values are N(0, 1)).
                CHECK(worst < 1e-5);
                CHECK(worst_oracle < 1e-5);
            }
}
