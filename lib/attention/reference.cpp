// The oracle: every (query head, query) row computed on its own in double,
// straight from the definition. Slow on purpose; tests compare against it.
#include <algorithm>
#include <cmath>
#include <limits>
#include <vector>

#include "attention/detail.hpp"

namespace heads {

using namespace attention_detail;

void attention_reference(Context&, AttentionWorkspace&, const AttentionArgs& a) {
    const float scale = scale_of(a);
    const ProbeSink sink(a);
    const std::int64_t n_heads = std::int64_t(a.kv_head_of.size());
    std::vector<double> scores;
    std::vector<float> row, k, v;  // the head's keys and values read back into f32
    for (std::int64_t h = 0; h < n_heads; ++h) {
        const std::int64_t g = a.kv_head_of[std::size_t(h)];
        const KvHeadView& kv = a.kv[std::size_t(g)];
        const std::int64_t base = kv.slots - a.n_new;
        k.resize(std::size_t(kv.slots * a.head_dim));
        v.resize(k.size());
        for (std::int64_t s = 0; s < kv.slots; ++s) {
            dequantize_row(kv.type, kv.k_row(s, a.head_dim), kv.k_scale_of(s), a.head_dim, k.data() + s * a.head_dim);
            dequantize_row(kv.type, kv.v_row(s, a.head_dim), kv.v_scale_of(s), a.head_dim, v.data() + s * a.head_dim);
        }
        scores.assign(std::size_t(kv.slots), 0.0);
        row.assign(std::size_t(kv.slots), 0.0f);
        for (std::int64_t i = 0; i < a.n_new; ++i) {
            const float* q = a.q + i * a.q_stride + h * a.head_dim;
            double top = -std::numeric_limits<double>::infinity();
            for (std::int64_t s = 0; s < kv.slots; ++s) {
                if (!visible(a, kv, base, s, i)) {
                    scores[std::size_t(s)] = -std::numeric_limits<double>::infinity();
                    continue;
                }
                double dot = 0;
                for (std::int64_t d = 0; d < a.head_dim; ++d) dot += double(q[d]) * k[std::size_t(s * a.head_dim + d)];
                scores[std::size_t(s)] = dot * scale + slot_bias(kv.pos[s]);
                top = std::max(top, scores[std::size_t(s)]);
            }
            double total = 0;
            for (auto& value : scores) {
                value = std::isinf(value) ? 0.0 : std::exp(value - top);
                total += value;
            }
            float* out = a.out + i * a.out_stride + h * a.head_dim;
            std::fill(out, out + a.head_dim, 0.0f);
            if (total == 0) continue;  // sees nothing: output 0
            for (std::int64_t s = 0; s < kv.slots; ++s) row[std::size_t(s)] = float(scores[std::size_t(s)] / total);
            if (a.probe.wanted()) sink.consume(h, g, i, row.data());
            if (!a.head_off.empty() && a.head_off[std::size_t(h)]) continue;
            for (std::int64_t d = 0; d < a.head_dim; ++d) {
                double sum = 0;
                for (std::int64_t s = 0; s < kv.slots; ++s) sum += scores[std::size_t(s)] / total * v[std::size_t(s * a.head_dim + d)];
                out[d] = float(sum);
            }
        }
    }
}

}  // namespace heads
