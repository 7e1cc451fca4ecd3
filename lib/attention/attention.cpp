// The fast attention. Many queries: for each (KV head, block of queries),
// the query heads sharing that KV head are stacked into one block of rows and
// run against blocks of keys with oneDNN matmuls (S = Q·Kᵀ, then O += P·V)
// and an online softmax, so memory is linear in the sequence length. Slots
// stored in a smaller type (bf16, q8, q4) are widened one block of keys at a
// time into the thread's scratch for those matmuls. A few queries (decoding):
// one row of scores per query, reading slots as stored. Probes are fed by a
// separate row pass, so asking for them never changes the output.
#include <omp.h>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <limits>
#include <stdexcept>
#include <string>

#include "attention/detail.hpp"
#include "ops/fast_exp.hpp"
#include "ops/matmul.hpp"

namespace heads {

using namespace attention_detail;

namespace {

constexpr std::int64_t kBlockQueries = 64;
constexpr std::int64_t kBlockKeys = 128;
constexpr std::int64_t kBlockThreshold = 8;  // fewer new queries: the row path
constexpr float kMinusInf = -std::numeric_limits<float>::infinity();

struct Scratch {
    float* base;
    std::int64_t per_thread;
    float* of(int thread) const { return base + per_thread * thread; }
};

Scratch reserve(AttentionWorkspace& ws, std::int64_t per_thread, int threads) {
    per_thread = (per_thread + 15) / 16 * 16;
    return {ws.memory.reserve(std::size_t(per_thread * threads)), per_thread};
}

bool off(const AttentionArgs& a, std::int64_t h) { return !a.head_off.empty() && a.head_off[std::size_t(h)]; }

// Rows of probabilities for the query heads of KV head g and query i, then the
// output and/or the probe. `scores` holds [G, slots], `acc` [G, head_dim].
// Keys and values are read in their slot type T, widened in registers.
template <SlotType T>
void attend_row_typed(const AttentionArgs& a, const Groups& groups, const ProbeSink* sink, bool write_output, std::int64_t g,
                      std::int64_t i, float* scores, float* acc) {
    const KvHeadView& kv = a.kv[std::size_t(g)];
    const std::int64_t base = kv.slots - a.n_new, head_dim = a.head_dim, slots = kv.slots;
    const std::int32_t* heads = groups.heads.data() + groups.offsets[std::size_t(g)];
    const std::int64_t n_group = groups.size(std::size_t(g));
    const float scale = scale_of(a);
    const std::int64_t row = slot_row_bytes(T, head_dim);
    for (std::int64_t s = 0; s < slots; ++s) {
        if (!visible(a, kv, base, s, i)) {
            for (std::int64_t hi = 0; hi < n_group; ++hi) scores[hi * slots + s] = kMinusInf;
            continue;
        }
        const std::uint8_t* k = static_cast<const std::uint8_t*>(kv.k) + s * row;
        const float bias = slot_bias(kv.pos[s]), k_scale = kv.k_scale_of(s) * scale;
        for (std::int64_t hi = 0; hi < n_group; ++hi) {
            const float* q = a.q + i * a.q_stride + heads[hi] * head_dim;
            scores[hi * slots + s] = dot_row<T>(q, k, head_dim) * k_scale + bias;
        }
    }
    for (std::int64_t hi = 0; hi < n_group; ++hi) {
        float* row = scores + hi * slots;
        float top = kMinusInf;
#pragma omp simd reduction(max : top)
        for (std::int64_t s = 0; s < slots; ++s) top = row[s] > top ? row[s] : top;
        if (top == kMinusInf) {
            std::fill(row, row + slots, 0.0f);
            continue;
        }
        float total = 0;
#pragma omp simd reduction(+ : total)
        for (std::int64_t s = 0; s < slots; ++s) {
            row[s] = fast_exp(row[s] - top);
            total += row[s];
        }
        const float inverse = 1.0f / total;
        for (std::int64_t s = 0; s < slots; ++s) row[s] *= inverse;
        if (sink) sink->consume(heads[hi], g, i, row);
    }
    if (!write_output) return;
    std::fill(acc, acc + n_group * head_dim, 0.0f);
    const auto* values = static_cast<const std::uint8_t*>(kv.v);
    // A slot of weight 0 (hidden, or its exp underflowed) is never read: a
    // slot a policy dropped may hold anything, NaN included.
    const auto add_slot = [&](std::int64_t hi, std::int64_t s) {
        const float p = scores[hi * slots + s];
        if (p != 0) add_row<T>(acc + hi * head_dim, p * kv.v_scale_of(s), values + s * row, head_dim);
    };
    std::int64_t s = 0;
    for (; s + 4 <= slots; s += 4)
        for (std::int64_t hi = 0; hi < n_group; ++hi) {
            const float* p = scores + hi * slots + s;
            if (p[0] == 0 || p[1] == 0 || p[2] == 0 || p[3] == 0) {
                for (std::int64_t c = s; c < s + 4; ++c) add_slot(hi, c);
                continue;
            }
            const float weights[4] = {p[0] * kv.v_scale_of(s), p[1] * kv.v_scale_of(s + 1), p[2] * kv.v_scale_of(s + 2),
                                      p[3] * kv.v_scale_of(s + 3)};
            add_four_rows<T>(acc + hi * head_dim, weights, values + s * row, row, head_dim);
        }
    for (; s < slots; ++s)
        for (std::int64_t hi = 0; hi < n_group; ++hi) add_slot(hi, s);
    for (std::int64_t hi = 0; hi < n_group; ++hi) {
        float* out = a.out + i * a.out_stride + heads[hi] * head_dim;
        if (off(a, heads[hi]))
            std::fill(out, out + head_dim, 0.0f);
        else
            std::copy(acc + hi * head_dim, acc + (hi + 1) * head_dim, out);
    }
}

void attend_row(const AttentionArgs& a, const Groups& groups, const ProbeSink* sink, bool write_output, std::int64_t g,
                std::int64_t i, float* scores, float* acc) {
    switch (a.kv[std::size_t(g)].type) {
        case SlotType::f32: return attend_row_typed<SlotType::f32>(a, groups, sink, write_output, g, i, scores, acc);
        case SlotType::bf16: return attend_row_typed<SlotType::bf16>(a, groups, sink, write_output, g, i, scores, acc);
        case SlotType::q8: return attend_row_typed<SlotType::q8>(a, groups, sink, write_output, g, i, scores, acc);
        case SlotType::q4: return attend_row_typed<SlotType::q4>(a, groups, sink, write_output, g, i, scores, acc);
    }
}

void attend_rows(WorkPool& pool, const AttentionArgs& a, const Groups& groups, AttentionWorkspace& ws,
                 const ProbeSink* sink, bool write_output) {
    std::int64_t max_slots = 0;
    for (const auto& kv : a.kv) max_slots = std::max(max_slots, kv.slots);
    const std::int64_t n_group = groups.largest();
    const Scratch scratch = reserve(ws, n_group * (max_slots + a.head_dim), pool.threads());
    const std::int64_t n_kv_heads = std::int64_t(a.kv.size());
    // Received mass is summed per KV head and head statistics per query head
    // over all queries: then one thread owns each KV head (and its query heads).
    const bool by_kv_head = sink && (a.probe.received || a.probe.received_recent || a.probe.stats);
    const std::int64_t items = by_kv_head ? n_kv_heads : n_kv_heads * a.n_new;
    // Items are taken one at a time: KV heads may hold different numbers of slots (compressed caches).
    pool.run(items, [&](std::int64_t item, int thread) {
        float* scores = scratch.of(thread);
        float* acc = scores + n_group * max_slots;
        if (by_kv_head) {
            for (std::int64_t i = 0; i < a.n_new; ++i) attend_row(a, groups, sink, write_output, item, i, scores, acc);
        } else {
            attend_row(a, groups, sink, write_output, item / a.n_new, item % a.n_new, scores, acc);
        }
    });
}

// One (KV head, query block) of the blocked path.
struct BlockTask {
    const AttentionArgs& a;
    const Groups& groups;
    const dnnl::matmul& qk;
    const dnnl::matmul& pv;
    dnnl::engine& engine;
    dnnl::stream& stream;

    void run(std::int64_t g, std::int64_t i0, std::int64_t nq, float* scratch) const {
        const KvHeadView& kv = a.kv[std::size_t(g)];
        const std::int64_t head_dim = a.head_dim, base = kv.slots - a.n_new;
        const std::int32_t* heads = groups.heads.data() + groups.offsets[std::size_t(g)];
        const std::int64_t n_group = groups.size(std::size_t(g)), rows = n_group * nq;
        if (rows == 0) return;
        float* q = scratch;                          // [rows, head_dim], row = hi*nq + i
        float* s = q + kBlockQueries * groups.largest() * head_dim;   // [rows, kBlockKeys]
        float* o = s + kBlockQueries * groups.largest() * kBlockKeys;  // [rows, head_dim]
        float* m = o + kBlockQueries * groups.largest() * head_dim;   // [rows]
        float* l = m + kBlockQueries * groups.largest();        // [rows]
        float* wide_k = l + kBlockQueries * groups.largest();   // [kBlockKeys, head_dim] when slots are not f32
        float* wide_v = wide_k + kBlockKeys * head_dim;         // [kBlockKeys, head_dim]
        const float scale = scale_of(a);
        for (std::int64_t hi = 0; hi < n_group; ++hi)
            for (std::int64_t i = 0; i < nq; ++i) {
                const float* from = a.q + (i0 + i) * a.q_stride + heads[hi] * head_dim;
                float* to = q + (hi * nq + i) * head_dim;
                for (std::int64_t d = 0; d < head_dim; ++d) to[d] = from[d] * scale;
            }
        std::fill(o, o + rows * head_dim, 0.0f);
        std::fill(m, m + rows, kMinusInf);
        std::fill(l, l + rows, 0.0f);
        // Causal without a mask: no query of this block sees a new token after its last one.
        const std::int64_t key_end = a.mask ? kv.slots : base + i0 + nq;
        for (std::int64_t k0 = 0; k0 < key_end; k0 += kBlockKeys) {
            const std::int64_t kn = std::min(kBlockKeys, key_end - k0);
            const float* keys = kv.k_f32() + k0 * head_dim;
            const float* values = kv.v_f32() + k0 * head_dim;
            if (kv.type != SlotType::f32) {
                widen(kv, k0, kn, wide_k, wide_v);
                keys = wide_k;
                values = wide_v;
            }
            // scores = q · kᵀ for this block of keys
            gemm(qk, engine, stream,
                 {.c = s, .ldc = kBlockKeys, .a = q, .lda = head_dim, .b = keys, .ldb = head_dim,
                  .m = rows, .n = kn, .k = head_dim, .b_transposed = true, .accumulate = false});
            // Causal without a mask is a limit per row; anything else is checked slot by slot.
            bool simple = !a.mask && a.sliding_window == 0;
            for (std::int64_t c = 0; simple && c < kn; ++c) simple = kv.pos[k0 + c] >= -2 && kv.pos[k0 + c] != -1;
            for (std::int64_t r = 0; r < rows; ++r) {
                float* row = s + r * kBlockKeys;
                const std::int64_t i = i0 + r % nq;
                const std::int64_t limit = a.mask ? kn : std::clamp<std::int64_t>(base + i + 1 - k0, 0, kn);
                if (!simple)
                    for (std::int64_t c = 0; c < limit; ++c)
                        row[c] = visible(a, kv, base, k0 + c, i) ? row[c] + slot_bias(kv.pos[k0 + c]) : kMinusInf;
                float top = m[r];
#pragma omp simd reduction(max : top)
                for (std::int64_t c = 0; c < limit; ++c) top = row[c] > top ? row[c] : top;
                if (top == kMinusInf) {
                    std::fill(row, row + kn, 0.0f);
                    continue;
                }
                const float correction = fast_exp(m[r] - top);
                float total = 0;
#pragma omp simd reduction(+ : total)
                for (std::int64_t c = 0; c < limit; ++c) {
                    row[c] = fast_exp(row[c] - top);
                    total += row[c];
                }
                std::fill(row + limit, row + kn, 0.0f);
                l[r] = l[r] * correction + total;
                m[r] = top;
                if (correction != 1.0f) {
                    float* out = o + r * head_dim;
                    for (std::int64_t d = 0; d < head_dim; ++d) out[d] *= correction;
                }
            }
            // out += probabilities · v for this block of keys
            gemm(pv, engine, stream,
                 {.c = o, .ldc = head_dim, .a = s, .lda = kBlockKeys, .b = values, .ldb = head_dim,
                  .m = rows, .n = head_dim, .k = kn, .b_transposed = false, .accumulate = true});
        }
        for (std::int64_t hi = 0; hi < n_group; ++hi)
            for (std::int64_t i = 0; i < nq; ++i) {
                const std::int64_t r = hi * nq + i;
                float* out = a.out + (i0 + i) * a.out_stride + heads[hi] * head_dim;
                const float inverse = l[r] > 0 && !off(a, heads[hi]) ? 1.0f / l[r] : 0.0f;
                for (std::int64_t d = 0; d < head_dim; ++d) out[d] = o[r * head_dim + d] * inverse;
            }
    }

    // Slots k0..k0+kn of a head stored in a smaller type, as f32 rows for the matmuls.
    void widen(const KvHeadView& kv, std::int64_t k0, std::int64_t kn, float* keys, float* values) const {
        for (std::int64_t c = 0; c < kn; ++c) {
            dequantize_row(kv.type, kv.k_row(k0 + c, a.head_dim), kv.k_scale_of(k0 + c), a.head_dim, keys + c * a.head_dim);
            dequantize_row(kv.type, kv.v_row(k0 + c, a.head_dim), kv.v_scale_of(k0 + c), a.head_dim,
                           values + c * a.head_dim);
        }
    }
};

void attend_blocks(Context& ctx, const AttentionArgs& a, const Groups& groups, AttentionWorkspace& ws) {
    const std::int64_t n_group = groups.largest(), head_dim = a.head_dim;
    const std::int64_t rows = kBlockQueries * n_group;
    const int threads = omp_get_max_threads();
    const Scratch scratch = reserve(ws, rows * (2 * head_dim + kBlockKeys + 2) + 2 * kBlockKeys * head_dim, threads);
    const BlockTask task{a, groups, ctx.gemm_primitive(true, false), ctx.gemm_primitive(false, true), ctx.engine(),
                         ctx.stream()};
    const std::int64_t blocks = (a.n_new + kBlockQueries - 1) / kBlockQueries;
    const std::int64_t items = std::int64_t(a.kv.size()) * blocks;
    std::atomic<bool> failed = false;
    std::string failure;
#pragma omp parallel for schedule(dynamic) if (threads > 1)
    for (std::int64_t item = 0; item < items; ++item) {
        // Later query blocks see more keys: hand them out first.
        const std::int64_t g = item % std::int64_t(a.kv.size()), block = blocks - 1 - item / std::int64_t(a.kv.size());
        const std::int64_t i0 = block * kBlockQueries;
        try {
            if (!failed) task.run(g, i0, std::min(kBlockQueries, a.n_new - i0), scratch.of(omp_get_thread_num()));
        } catch (const std::exception& error) {
#pragma omp critical(heads_attention_failure)
            if (!failed.exchange(true)) failure = error.what();
        }
    }
    if (failed) throw std::runtime_error(failure);
}

void check(const AttentionArgs& a) {
    if (a.positions.size() != std::size_t(a.n_new)) throw std::invalid_argument("attention: one position per new query");
    if (!a.head_off.empty() && a.head_off.size() != a.kv_head_of.size())
        throw std::invalid_argument("attention: head mask size differs from the number of heads");
    for (const auto& kv : a.kv)
        if (kv.slots < a.n_new) throw std::invalid_argument("attention: a KV head lacks the new tokens' slots");
}

}  // namespace

void attention(Context& ctx, AttentionWorkspace& ws, const AttentionArgs& a) {
    if (a.n_new == 0 || a.kv_head_of.empty()) return;
    check(a);
    Groups& groups = ws.groups;
    groups.build(a);
    if (a.n_new >= kBlockThreshold)
        attend_blocks(ctx, a, groups, ws);
    else
        attend_rows(ctx.pool(), a, groups, ws, nullptr, true);
    if (a.probe.wanted()) {
        const ProbeSink sink(a);
        attend_rows(ctx.pool(), a, groups, ws, &sink, false);
    }
}

}  // namespace heads
