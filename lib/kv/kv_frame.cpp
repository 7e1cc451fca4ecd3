#include "kv/kv_frame.hpp"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>

#include <fmt/format.h>
#include <fmt/ranges.h>

#include "io/id_line.hpp"
#include "io/number.hpp"
#include "safetensors/keys.hpp"
#include "tensor/error.hpp"

namespace heads {
namespace {

std::string name_of(std::int64_t l, const char* what) { return fmt::format("kv.{}.{}", l, what); }

Tensor f32_tensor(Shape shape) { return Tensor::zeros(DType::F32, std::move(shape)); }

// One value per slot of the layer, heads one after the other, from
// `values(head, g)` giving head g's slots.
template <class Values>
Tensor per_slot(const KvCache& cache, std::int64_t l, std::int64_t layer_slots, Values values) {
    Tensor out = f32_tensor({layer_slots});
    float* to = out.mutable_data<float>().data();
    for (std::int64_t g = 0; g < cache.n_kv_heads(l); ++g) {
        const KvHead& head = cache.head(l, g);
        values(head, g, to);
        to += head.slots;
    }
    return out;
}

}  // namespace

Frame kv_to_frame(const KvCache& cache, const KvFrameInfo& info, const KvReceived* received) {
    Frame frame;
    frame.metadata[std::string(keys::kind)] = std::string(kinds::kv);
    frame.metadata[std::string(keys::model)] = info.model;
    frame.metadata[std::string(keys::tokens)] = fmt::format("{}", fmt::join(info.tokens, " "));
    frame.metadata[std::string(keys::policy)] = info.policy;
    if (received) frame.metadata[std::string(keys::recent_queries)] = std::to_string(received->recent_queries);
    const std::int64_t head_dim = cache.head_dim();
    for (std::int64_t l = 0; l < cache.n_layers(); ++l) {
        const std::int64_t n_kv_heads = cache.n_kv_heads(l);
        Tensor counts = Tensor::zeros(DType::I32, {n_kv_heads});
        std::int64_t layer_slots = 0;
        for (std::int64_t g = 0; g < n_kv_heads; ++g) {
            counts.mutable_data<std::int32_t>()[std::size_t(g)] = std::int32_t(cache.head(l, g).slots);
            layer_slots += cache.head(l, g).slots;
        }
        Tensor k = f32_tensor({layer_slots, head_dim}), v = f32_tensor({layer_slots, head_dim});
        Tensor pos = Tensor::zeros(DType::I32, {layer_slots});
        float *k_to = k.mutable_data<float>().data(), *v_to = v.mutable_data<float>().data();
        std::int32_t* pos_to = pos.mutable_data<std::int32_t>().data();
        for (std::int64_t g = 0; g < n_kv_heads; ++g) {
            const KvHead& head = cache.head(l, g);
            const std::size_t floats = std::size_t(head.slots * head_dim);
            std::memcpy(k_to, head.k.data(), sizeof(float) * floats);
            std::memcpy(v_to, head.v.data(), sizeof(float) * floats);
            std::memcpy(pos_to, head.pos.data(), sizeof(std::int32_t) * std::size_t(head.slots));
            k_to += floats, v_to += floats, pos_to += head.slots;
        }
        frame.add(name_of(l, "slots"), std::move(counts));
        frame.add(name_of(l, "k"), std::move(k));
        frame.add(name_of(l, "v"), std::move(v));
        frame.add(name_of(l, "pos"), std::move(pos));
        if (!info.budgets.empty()) {
            const auto& budgets = info.budgets[std::size_t(l)];
            Tensor budget = Tensor::zeros(DType::I32, {n_kv_heads});
            std::copy(budgets.begin(), budgets.end(), budget.mutable_data<std::int32_t>().begin());
            frame.add(name_of(l, "budget"), std::move(budget));
        }
        if (cache.tracks_received())
            frame.add(name_of(l, "score"), per_slot(cache, l, layer_slots, [](const KvHead& head, std::int64_t, float* to) {
                          std::copy(head.received.data(), head.received.data() + head.slots, to);
                      }));
        if (received) {
            // The probe's arrays are [n_kv_heads, slot axis]; each head takes its own slots.
            const std::int64_t axis = received->slots[std::size_t(l)];
            for (const bool recent : {false, true}) {
                const auto& in = (recent ? received->recent : received->all)[std::size_t(l)];
                frame.add(name_of(l, recent ? "received_recent" : "received"),
                          per_slot(cache, l, layer_slots, [&](const KvHead& head, std::int64_t g, float* to) {
                              for (std::int64_t s = 0; s < head.slots; ++s)
                                  to[s] = s < axis && !in.empty() ? in[std::size_t(g * axis + s)] : 0.0f;
                          }));
            }
        }
    }
    return frame;
}

std::string kv_frame_policy(const Frame& frame) {
    const auto policy = frame.metadata.find(keys::policy);
    return policy == frame.metadata.end() ? KvFrameInfo().policy : policy->second;
}

namespace {

// A layer's tensors, checked, in the ragged layout (an old padded frame is converted).
struct LayerTensors {
    std::vector<std::int64_t> slots;  // per head
    std::vector<float> k, v;          // [slots_l, head_dim]
    std::vector<std::int32_t> pos;    // [slots_l]
    std::int64_t head_dim = 0;
};

std::int64_t checked_slot_count(const Tensor& counts, const std::string& where, std::int64_t l,
                                std::vector<std::int64_t>& slots) {
    if (counts.dtype() != DType::I32 || counts.rank() != 1)
        throw Error("{}: kv.{}.slots must be I32 [n_kv_heads]", where, l);
    std::int64_t total = 0;
    for (auto n : counts.data<std::int32_t>()) {
        if (n < 0) throw Error("{}: kv.{}.slots holds a negative count ({})", where, l, n);
        total += n;
        slots.push_back(n);
    }
    return total;
}

LayerTensors ragged_layer(const Frame& frame, const std::string& where, std::int64_t l, const Tensor& counts) {
    LayerTensors out;
    const std::int64_t total = checked_slot_count(counts, where, l, out.slots);
    const Tensor* k = frame.find(name_of(l, "k"));
    const Tensor* v = frame.find(name_of(l, "v"));
    const Tensor* pos = frame.find(name_of(l, "pos"));
    if (!k || !v || !pos) throw Error("{}: layer {} has kv.{}.slots but not kv.{}.k, kv.{}.v and kv.{}.pos", where, l, l, l, l, l);
    if (k->rank() != 2 || v->shape() != k->shape() || k->dim(0) != total)
        throw Error("{}: kv.{}.k {} and kv.{}.v {} must be the same [{}, head_dim] (the sum of kv.{}.slots)", where, l,
                    shape_string(k->shape()), l, shape_string(v->shape()), total, l);
    if (pos->dtype() != DType::I32 || pos->shape() != Shape{total})
        throw Error("{}: kv.{}.pos must be I32 [{}]", where, l, total);
    if (!is_floating(k->dtype()) || !is_floating(v->dtype()))
        throw Error("{}: kv.{}.k and kv.{}.v must be floating point", where, l, l);
    out.head_dim = k->dim(1);
    out.k = k->to_f32(), out.v = v->to_f32();
    const auto p = pos->data<std::int32_t>();
    out.pos.assign(p.begin(), p.end());
    return out;
}

LayerTensors padded_layer(const Frame& frame, const std::string& where, std::int64_t l, const Tensor& k) {
    const Tensor* v = frame.find(name_of(l, "v"));
    const Tensor* pos = frame.find(name_of(l, "pos"));
    if (!v || !pos) throw Error("{}: layer {} has kv.{}.k but not kv.{}.v and kv.{}.pos", where, l, l, l, l);
    if (k.rank() != 3 || v->shape() != k.shape())
        throw Error("{}: kv.{}.k {} and kv.{}.v {} must be the same [n_kv_heads, slots, head_dim]", where, l,
                    shape_string(k.shape()), l, shape_string(v->shape()));
    if (pos->dtype() != DType::I32 || pos->shape() != Shape{k.dim(0), k.dim(1)})
        throw Error("{}: kv.{}.pos must be I32 [{}, {}]", where, l, k.dim(0), k.dim(1));
    if (!is_floating(k.dtype()) || !is_floating(v->dtype()))
        throw Error("{}: kv.{}.k and kv.{}.v must be floating point", where, l, l);
    LayerTensors out;
    out.head_dim = k.dim(2);
    const std::vector<float> k_data = k.to_f32(), v_data = v->to_f32();
    const auto pos_data = pos->data<std::int32_t>();
    const std::int64_t axis = k.dim(1), head_dim = out.head_dim;
    for (std::int64_t g = 0; g < k.dim(0); ++g) {
        std::int64_t used = axis;  // up to the last slot in use: trailing -1 slots are padding
        while (used > 0 && pos_data[std::size_t(g * axis + used - 1)] == -1) --used;
        out.slots.push_back(used);
        const auto first = std::size_t(g * axis * head_dim), count = std::size_t(used * head_dim);
        out.k.insert(out.k.end(), k_data.begin() + std::ptrdiff_t(first), k_data.begin() + std::ptrdiff_t(first + count));
        out.v.insert(out.v.end(), v_data.begin() + std::ptrdiff_t(first), v_data.begin() + std::ptrdiff_t(first + count));
        out.pos.insert(out.pos.end(), pos_data.begin() + g * axis, pos_data.begin() + g * axis + used);
    }
    return out;
}

// A per-slot tensor of layer l: [slots_l] in a ragged frame; [n_kv_heads, axis] in a padded one.
std::vector<float> slot_values(const Tensor& t, const std::string& where, const std::string& name,
                               const std::vector<std::int64_t>& slots, std::int64_t padded_axis) {
    std::int64_t total = 0;
    for (auto n : slots) total += n;
    const Shape want = padded_axis < 0 ? Shape{total} : Shape{std::int64_t(slots.size()), padded_axis};
    if (t.dtype() != DType::F32 || t.shape() != want) throw Error("{}: {} must be F32 {}", where, name, shape_string(want));
    const auto data = t.data<float>();
    if (padded_axis < 0) return {data.begin(), data.end()};
    std::vector<float> out;
    for (std::size_t g = 0; g < slots.size(); ++g)
        out.insert(out.end(), data.begin() + std::ptrdiff_t(g) * padded_axis,
                   data.begin() + std::ptrdiff_t(g) * padded_axis + slots[g]);
    return out;
}

}  // namespace

KvFrameContents kv_from_frame(const Frame& frame, const std::string& where) {
    const auto kind = frame.metadata.find(keys::kind);
    if (kind == frame.metadata.end() || kind->second != kinds::kv)
        throw Error("{}: not a KV frame (heads.kind is '{}')", where, kind == frame.metadata.end() ? "" : kind->second);
    KvFrameContents contents;
    contents.metadata = frame.metadata;
    const auto model = frame.metadata.find(keys::model);
    if (model == frame.metadata.end()) throw Error("{}: the KV frame has no heads.model", where);
    contents.info.model = model->second;
    contents.info.policy = kv_frame_policy(frame);
    if (const auto tokens = frame.metadata.find(keys::tokens); tokens != frame.metadata.end()) {
        try {
            parse_ids(tokens->second, contents.info.tokens);
        } catch (const Error& error) {
            throw Error("{}: heads.tokens: {}", where, error.what());
        }
    }
    if (const auto recent = frame.metadata.find(keys::recent_queries); recent != frame.metadata.end()) {
        const auto value = parse_count(recent->second);
        if (!value) throw Error("{}: heads.recent_queries: bad count '{}'", where, recent->second);
        contents.recent_queries = *value;
    }
    std::vector<LayerTensors> layers;
    std::vector<std::int64_t> padded_axes;  // the slot axis of a padded layer, -1 for a ragged one
    std::int64_t head_dim = -1;
    for (std::int64_t l = 0;; ++l) {
        const Tensor* counts = frame.find(name_of(l, "slots"));
        const Tensor* k = frame.find(name_of(l, "k"));
        if (!counts && !k) break;
        layers.push_back(counts ? ragged_layer(frame, where, l, *counts) : padded_layer(frame, where, l, *k));
        padded_axes.push_back(counts ? -1 : k->dim(1));
        const LayerTensors& layer = layers.back();
        if (!layer.slots.empty()) {
            if (head_dim >= 0 && layer.head_dim != head_dim)
                throw Error("{}: kv.{}.k has head_dim {}, earlier layers {}", where, l, layer.head_dim, head_dim);
            head_dim = layer.head_dim;
        }
    }
    if (layers.empty()) throw Error("{}: the KV frame has no kv.0.k", where);
    std::vector<std::int64_t> kv_head_counts;
    for (const auto& layer : layers) kv_head_counts.push_back(std::int64_t(layer.slots.size()));
    contents.cache = KvCache(kv_head_counts, std::max<std::int64_t>(head_dim, 0));
    head_dim = contents.cache.head_dim();
    const std::int64_t n_tokens = std::int64_t(contents.info.tokens.size());
    for (std::int64_t l = 0; l < std::int64_t(layers.size()); ++l) {
        const LayerTensors& layer = layers[std::size_t(l)];
        for (const auto& [name, data] : {std::pair{"k", &layer.k}, {"v", &layer.v}})
            if (!std::all_of(data->begin(), data->end(), [](float value) { return std::isfinite(value); }))
                throw Error("{}: kv.{}.{} holds NaN or infinity", where, l, name);
        std::int64_t first = 0;
        for (std::int64_t g = 0; g < std::int64_t(layer.slots.size()); ++g) {
            const std::int64_t n = layer.slots[std::size_t(g)];
            const auto positions = std::span(layer.pos).subspan(std::size_t(first), std::size_t(n));
            // A slot holds one of the sequence's positions (or a synthetic one,
            // negative): a position past heads.tokens means the two disagree.
            for (std::int64_t slot = 0; slot < n; ++slot)
                if (const std::int32_t p = positions[std::size_t(slot)]; p >= n_tokens)
                    throw Error("{}: kv.{}.pos: KV head {} slot {} holds position {}, but heads.tokens has {} tokens",
                                where, l, g, slot, p, n_tokens);
            contents.cache.append(l, g, layer.k.data() + first * head_dim, layer.v.data() + first * head_dim, head_dim,
                                  positions);
            first += n;
        }
        for (auto [what, target] : {std::pair{"received", &contents.received},
                                    {"received_recent", &contents.received_recent}, {"score", &contents.score}}) {
            const std::string name = name_of(l, what);
            const Tensor* values = frame.find(name);
            if (!values) continue;
            target->resize(layers.size());
            (*target)[std::size_t(l)] = slot_values(*values, where, name, layer.slots, padded_axes[std::size_t(l)]);
        }
        if (const Tensor* budget = frame.find(name_of(l, "budget"))) {
            if (budget->dtype() != DType::I32 || budget->shape() != Shape{std::int64_t(layer.slots.size())})
                throw Error("{}: kv.{}.budget must be I32 [{}]", where, l, layer.slots.size());
            const auto b = budget->data<std::int32_t>();
            for (auto x : b)
                if (x < -1) throw Error("{}: kv.{}.budget holds {} (a slot count, or -1 for unbounded)", where, l, x);
            contents.info.budgets.resize(layers.size());
            contents.info.budgets[std::size_t(l)].assign(b.begin(), b.end());
        }
    }
    if (!contents.info.budgets.empty())
        for (std::size_t l = 0; l < layers.size(); ++l)
            if (contents.info.budgets[l].size() != layers[l].slots.size())
                throw Error("{}: kv.{}.budget is missing (other layers have one)", where, l);
    return contents;
}

std::int64_t frame_data_bytes(const Frame& frame) {
    std::int64_t bytes = 0;
    for (const auto& [name, tensor] : frame) bytes += std::int64_t(tensor.nbytes());
    return bytes;
}

}  // namespace heads
