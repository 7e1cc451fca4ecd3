#include "heads/kv_grouping.hpp"

#include <algorithm>
#include <limits>
#include <numeric>

#include "model/writer.hpp"
#include "tensor/error.hpp"

namespace heads {
namespace {

// Dot products of every pair of a layer's KV heads' rows, summed over the calibration tokens.
using Gram = std::vector<std::vector<double>>;  // [n_kv_heads][n_kv_heads]

// Adds slots from..slots-1 of each KV head of layer l: keys into gram_k, values into gram_v.
void add_layer(Gram& gram_k, Gram& gram_v, const KvCache& cache, std::int64_t l, std::int64_t from) {
    const std::int64_t n = cache.n_kv_heads(l), dim = cache.head_dim();
    const std::int64_t slots = cache.head(l, 0).slots;
    for (std::int64_t a = 0; a < n; ++a)
        if (cache.head(l, a).slots != slots)
            throw Error("layer {}: KV heads hold different numbers of slots ({} and {})", l, slots,
                        cache.head(l, a).slots);
    for (std::int64_t a = 0; a < n; ++a)
        for (std::int64_t b = a; b < n; ++b) {
            const KvHead &x = cache.head(l, a), &y = cache.head(l, b);
            double k = 0, v = 0;
            for (std::int64_t s = from; s < slots; ++s) {
                const float *xk = x.k_f32() + s * dim, *yk = y.k_f32() + s * dim;
                const float *xv = x.v_f32() + s * dim, *yv = y.v_f32() + s * dim;
                for (std::int64_t i = 0; i < dim; ++i) {
                    k += double(xk[i]) * double(yk[i]);
                    v += double(xv[i]) * double(yv[i]);
                }
            }
            gram_k[std::size_t(a)][std::size_t(b)] += k;
            gram_v[std::size_t(a)][std::size_t(b)] += v;
            if (a != b) {
                gram_k[std::size_t(b)][std::size_t(a)] += k;
                gram_v[std::size_t(b)][std::size_t(a)] += v;
            }
        }
}

// ‖X_a − X_b‖² / mean_a ‖X_a‖², added to `out` (nothing when every row is 0).
void add_relative_distances(Distances& out, const Gram& gram) {
    const std::size_t n = gram.size();
    double energy = 0;
    for (std::size_t a = 0; a < n; ++a) energy += gram[a][a];
    energy /= double(n);
    if (energy <= 0) return;
    for (std::size_t a = 0; a < n; ++a)
        for (std::size_t b = 0; b < n; ++b)
            if (a != b) out[a][b] += std::max(0.0, gram[a][a] + gram[b][b] - 2 * gram[a][b]) / energy;
}

// Summed distance of head x to the members of `group` (leaving out `skip`).
double distance_to(const Distances& d, std::int64_t x, const std::vector<std::int64_t>& group, std::int64_t skip = -1) {
    double sum = 0;
    for (const std::int64_t y : group)
        if (y != skip) sum += d[std::size_t(x)][std::size_t(y)];
    return sum;
}

}  // namespace

std::vector<Distances> kv_head_distances(Session& session, std::span<const std::int32_t> tokens, std::int64_t ctx) {
    const Model& model = session.model();
    const LlamaConfig& c = model.config();
    if (tokens.size() < 2) throw Error("{} calibration token(s): grouping heads needs at least 2", tokens.size());
    if (session.cache().slot_type() != SlotType::f32) throw Error("grouping heads needs an f32 KV cache");
    const std::size_t window = std::size_t(ctx > 0 ? ctx : model.context_length());
    std::vector<Gram> gram_k, gram_v;
    for (const LayerHeads& heads : c.layers) {
        const std::size_t n = std::size_t(heads.n_kv_heads());
        gram_k.emplace_back(n, std::vector<double>(n, 0.0));
        gram_v.emplace_back(n, std::vector<double>(n, 0.0));
    }
    std::vector<std::int32_t> ids;
    for (std::size_t start = 0; start + 1 < tokens.size(); start += window) {
        ids.assign(tokens.begin() + std::ptrdiff_t(start),
                   tokens.begin() + std::ptrdiff_t(std::min(start + window, tokens.size())));
        if (ids.size() < 2) break;
        ids[0] = c.bos_token_id;
        session.reset();
        ForwardRequest request;
        request.tokens = ids;
        request.logits = LogitRows::none;
        session.forward(request);
        for (std::int64_t l = 0; l < c.n_layers; ++l)
            if (session.cache().n_kv_heads(l) > 0)
                add_layer(gram_k[std::size_t(l)], gram_v[std::size_t(l)], session.cache(), l, 1);
    }
    std::vector<Distances> distances;
    for (std::size_t l = 0; l < gram_k.size(); ++l) {
        const std::size_t n = gram_k[l].size();
        Distances d(n, std::vector<double>(n, 0.0));
        add_relative_distances(d, gram_k[l]);
        add_relative_distances(d, gram_v[l]);
        distances.push_back(std::move(d));
    }
    return distances;
}

Groups balanced_groups(const Distances& d, std::int64_t size) {
    const std::int64_t n = std::int64_t(d.size());
    if (size < 1 || n % size != 0) throw Error("{} heads do not split into groups of {}", n, size);
    std::vector<bool> free(std::size_t(n), true);
    Groups groups;
    // Greedy: the closest free pair starts a group; the free head closest to it joins until it is full.
    for (std::int64_t left = n; left > 0; left -= size) {
        std::vector<std::int64_t> group;
        if (size == 1) {
            group.push_back(std::find(free.begin(), free.end(), true) - free.begin());
        } else {
            double best = std::numeric_limits<double>::infinity();
            std::int64_t first = -1, second = -1;
            for (std::int64_t a = 0; a < n; ++a)
                for (std::int64_t b = a + 1; b < n; ++b)
                    if (free[std::size_t(a)] && free[std::size_t(b)] && d[std::size_t(a)][std::size_t(b)] < best) {
                        best = d[std::size_t(a)][std::size_t(b)];
                        first = a;
                        second = b;
                    }
            group = {first, second};
        }
        for (const std::int64_t x : group) free[std::size_t(x)] = false;
        while (std::int64_t(group.size()) < size) {
            double best = std::numeric_limits<double>::infinity();
            std::int64_t next = -1;
            for (std::int64_t x = 0; x < n; ++x)
                if (free[std::size_t(x)] && distance_to(d, x, group) < best) {
                    best = distance_to(d, x, group);
                    next = x;
                }
            group.push_back(next);
            free[std::size_t(next)] = false;
        }
        groups.push_back(std::move(group));
    }
    // Swaps: a of group i and b of group j trade places while that lowers the summed distance.
    // Each swap lowers it by more than the threshold, so this ends.
    double scale = 0;
    for (const auto& row : d) scale = std::max(scale, *std::max_element(row.begin(), row.end()));
    const double threshold = 1e-12 * scale;
    for (bool swapped = true; swapped;) {
        swapped = false;
        for (std::size_t i = 0; i < groups.size(); ++i)
            for (std::size_t j = i + 1; j < groups.size(); ++j)
                for (auto& a : groups[i])
                    for (auto& b : groups[j]) {
                        const double change = distance_to(d, b, groups[i], a) - distance_to(d, a, groups[i], a) +
                                              distance_to(d, a, groups[j], b) - distance_to(d, b, groups[j], b);
                        if (change < -threshold) {
                            std::swap(a, b);
                            swapped = true;
                        }
                    }
    }
    for (auto& group : groups) std::sort(group.begin(), group.end());
    std::sort(groups.begin(), groups.end());
    return groups;
}

std::vector<Groups> similar_kv_groups(Session& session, std::span<const std::int32_t> tokens, std::int64_t kv_heads,
                                      std::int64_t ctx) {
    const LlamaConfig& c = session.model().config();
    check_pooling(c, kv_heads);
    std::vector<Groups> groups;
    for (const Distances& d : kv_head_distances(session, tokens, ctx))
        groups.push_back(balanced_groups(d, std::int64_t(d.size()) / kv_heads));
    return groups;
}

}  // namespace heads
