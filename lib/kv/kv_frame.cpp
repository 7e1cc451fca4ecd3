#include "kv/kv_frame.hpp"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <optional>
#include <tuple>

#include <fmt/format.h>
#include <fmt/ranges.h>

#include "io/id_line.hpp"
#include "kv/policy.hpp"
#include "io/number.hpp"
#include "safetensors/keys.hpp"
#include "tensor/error.hpp"
#include "tensor/quote.hpp"

namespace heads {
namespace {

std::string name_of(std::int64_t l, const char* what) { return fmt::format("kv.{}.{}", l, what); }

Tensor f32_tensor(Shape shape) { return Tensor::zeros(DType::F32, std::move(shape)); }

// The dtype of kv.L.k and kv.L.v for each slot type: q4's bytes hold two numbers each.
DType slot_dtype(SlotType type) {
    switch (type) {
        case SlotType::f32: return DType::F32;
        case SlotType::bf16: return DType::BF16;
        case SlotType::q8: return DType::I8;
        case SlotType::q4: return DType::U8;
    }
    throw Error("unknown slot type");
}

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
    for (std::int64_t l = 0; l < cache.n_layers(); ++l) {
        const std::int64_t n_kv_heads = cache.n_kv_heads(l);
        Tensor counts = Tensor::zeros(DType::I32, {n_kv_heads});
        std::int64_t layer_slots = 0;
        for (std::int64_t g = 0; g < n_kv_heads; ++g) {
            counts.mutable_data<std::int32_t>()[std::size_t(g)] = std::int32_t(cache.head(l, g).slots);
            layer_slots += cache.head(l, g).slots;
        }
        // Keys and values as the cache stores them: one row per slot, no padding.
        const SlotType type = cache.slot_type();
        const std::int64_t row = cache.row_bytes();
        const bool scaled = slot_type_scaled(type);
        const DType dtype = slot_dtype(type);
        const Shape shape{layer_slots, row / std::int64_t(dtype_size(dtype))};
        Tensor k = Tensor::zeros(dtype, shape), v = Tensor::zeros(dtype, shape);
        Tensor k_scale = f32_tensor({scaled ? layer_slots : 0}), v_scale = f32_tensor({scaled ? layer_slots : 0});
        Tensor pos = Tensor::zeros(DType::I32, {layer_slots});
        std::byte *k_to = k.mutable_bytes().data(), *v_to = v.mutable_bytes().data();
        float *k_scale_to = k_scale.mutable_data<float>().data(), *v_scale_to = v_scale.mutable_data<float>().data();
        std::int32_t* pos_to = pos.mutable_data<std::int32_t>().data();
        for (std::int64_t g = 0; g < n_kv_heads; ++g) {
            const KvHead& head = cache.head(l, g);
            const std::size_t bytes = std::size_t(head.slots * row);
            std::memcpy(k_to, head.k.data(), bytes);
            std::memcpy(v_to, head.v.data(), bytes);
            std::memcpy(pos_to, head.pos.data(), sizeof(std::int32_t) * std::size_t(head.slots));
            if (scaled) {
                std::copy(head.k_scale.data(), head.k_scale.data() + head.slots, k_scale_to);
                std::copy(head.v_scale.data(), head.v_scale.data() + head.slots, v_scale_to);
                k_scale_to += head.slots, v_scale_to += head.slots;
            }
            k_to += bytes, v_to += bytes, pos_to += head.slots;
        }
        frame.add(name_of(l, "slots"), std::move(counts));
        frame.add(name_of(l, "k"), std::move(k));
        frame.add(name_of(l, "v"), std::move(v));
        if (scaled) {
            frame.add(name_of(l, "k_scale"), std::move(k_scale));
            frame.add(name_of(l, "v_scale"), std::move(v_scale));
        }
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

std::string kv_frame_policy(const Frame& frame, const std::string& where) {
    const auto policy = frame.metadata.find(keys::policy);
    if (policy == frame.metadata.end()) return KvFrameInfo().policy;
    try {
        make_kv_policy(policy->second);
    } catch (const Error& error) {
        throw Error("{}: heads.policy: {}", where, error.what());
    }
    return policy->second;
}

namespace {

// A layer's tensors, checked, in the ragged layout (an old padded frame is converted).
struct LayerTensors {
    std::vector<std::int64_t> slots;  // per head
    SlotType type = SlotType::f32;
    std::vector<std::uint8_t> k, v;   // [slots_l, slot_row_bytes(type, head_dim)]
    std::vector<float> k_scale, v_scale;  // [slots_l] for q8 and q4
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
    if (k->rank() != 2 || v->shape() != k->shape() || v->dtype() != k->dtype() || k->dim(0) != total)
        throw Error("{}: kv.{}.k {} and kv.{}.v {} must be the same [{}, head_dim] (the sum of kv.{}.slots)", where, l,
                    shape_string(k->shape()), l, shape_string(v->shape()), total, l);
    if (pos->dtype() != DType::I32 || pos->shape() != Shape{total})
        throw Error("{}: kv.{}.pos must be I32 [{}]", where, l, total);
    const Tensor* k_scale = frame.find(name_of(l, "k_scale"));
    const Tensor* v_scale = frame.find(name_of(l, "v_scale"));
    // The slot type from the dtype: I8 with scales is q8, U8 with scales q4 (two numbers a byte).
    switch (k->dtype()) {
        case DType::F32: case DType::F16: out.type = SlotType::f32; break;
        case DType::BF16: out.type = SlotType::bf16; break;
        case DType::I8: out.type = SlotType::q8; break;
        case DType::U8: out.type = SlotType::q4; break;
        default: throw Error("{}: kv.{}.k is {} (F32, BF16, F16, or I8 or U8 with scales)", where, l, dtype_name(k->dtype()));
    }
    const bool scaled = slot_type_scaled(out.type);
    if (scaled != (k_scale != nullptr) || scaled != (v_scale != nullptr))
        throw Error("{}: kv.{}.k_scale and kv.{}.v_scale go with I8 and U8 keys and values, and only with them", where, l, l);
    out.head_dim = out.type == SlotType::q4 ? 2 * k->dim(1) : k->dim(1);
    if (k->dtype() == DType::F16) {
        // Stored as f32 in the cache.
        for (const auto& [from, to] : {std::pair{k, &out.k}, {v, &out.v}}) {
            const std::vector<float> values = from->to_f32();
            const auto* bytes = reinterpret_cast<const std::uint8_t*>(values.data());
            to->assign(bytes, bytes + values.size() * sizeof(float));
        }
    } else {
        for (const auto& [from, to] : {std::pair{k, &out.k}, {v, &out.v}}) {
            const auto bytes = from->bytes();
            const auto* first = reinterpret_cast<const std::uint8_t*>(bytes.data());
            to->assign(first, first + bytes.size());
        }
    }
    if (scaled) {
        for (const auto& [from, to, name] : {std::tuple{k_scale, &out.k_scale, "k_scale"}, {v_scale, &out.v_scale, "v_scale"}}) {
            if (from->dtype() != DType::F32 || from->shape() != Shape{total})
                throw Error("{}: kv.{}.{} must be F32 [{}]", where, l, name, total);
            const auto values = from->data<float>();
            if (!std::all_of(values.begin(), values.end(), [](float x) { return std::isfinite(x) && x >= 0; }))
                throw Error("{}: kv.{}.{} holds a negative, NaN or infinite scale", where, l, name);
            to->assign(values.begin(), values.end());
        }
    }
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
    const auto append_rows = [](std::vector<std::uint8_t>& to, const std::vector<float>& from, std::size_t first,
                                std::size_t count) {
        const auto* bytes = reinterpret_cast<const std::uint8_t*>(from.data() + first);
        to.insert(to.end(), bytes, bytes + count * sizeof(float));
    };
    for (std::int64_t g = 0; g < k.dim(0); ++g) {
        std::int64_t used = axis;  // up to the last slot in use: trailing -1 slots are padding
        while (used > 0 && pos_data[std::size_t(g * axis + used - 1)] == -1) --used;
        out.slots.push_back(used);
        const auto first = std::size_t(g * axis * head_dim), count = std::size_t(used * head_dim);
        append_rows(out.k, k_data, first, count);
        append_rows(out.v, v_data, first, count);
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
        throw Error("{}: not a KV frame (heads.kind is {})", where, quote(kind == frame.metadata.end() ? "" : kind->second));
    KvFrameContents contents;
    contents.metadata = frame.metadata;
    const auto model = frame.metadata.find(keys::model);
    if (model == frame.metadata.end()) throw Error("{}: the KV frame has no heads.model", where);
    contents.info.model = model->second;
    contents.info.policy = kv_frame_policy(frame, where);
    if (const auto tokens = frame.metadata.find(keys::tokens); tokens != frame.metadata.end()) {
        try {
            parse_ids(tokens->second, contents.info.tokens);
        } catch (const Error& error) {
            throw Error("{}: heads.tokens: {}", where, error.what());
        }
    }
    if (const auto recent = frame.metadata.find(keys::recent_queries); recent != frame.metadata.end()) {
        const auto value = parse_count(recent->second);
        if (!value) throw Error("{}: heads.recent_queries: bad count {}", where, quote(recent->second));
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
    // One slot type for the whole cache: that of its layers with slots.
    std::optional<SlotType> type;
    for (std::int64_t l = 0; l < std::int64_t(layers.size()); ++l) {
        const LayerTensors& layer = layers[std::size_t(l)];
        if (layer.pos.empty()) continue;
        if (type && *type != layer.type)
            throw Error("{}: kv.{}.k holds {} slots, earlier layers {}", where, l, slot_type_name(layer.type),
                        slot_type_name(*type));
        type = layer.type;
    }
    if (type) contents.cache.set_slot_type(*type);
    const std::int64_t row = contents.cache.row_bytes();
    const std::int64_t n_tokens = std::int64_t(contents.info.tokens.size());
    for (std::int64_t l = 0; l < std::int64_t(layers.size()); ++l) {
        const LayerTensors& layer = layers[std::size_t(l)];
        if (layer.type == SlotType::f32 || layer.type == SlotType::bf16)
            for (const auto& [name, data] : {std::pair{"k", &layer.k}, {"v", &layer.v}}) {
                std::vector<float> values(static_cast<std::size_t>(head_dim));
                for (std::size_t at = 0; at + std::size_t(row) <= data->size(); at += std::size_t(row)) {
                    dequantize_row(layer.type, data->data() + at, 1.0f, head_dim, values.data());
                    if (!std::all_of(values.begin(), values.end(), [](float value) { return std::isfinite(value); }))
                        throw Error("{}: kv.{}.{} holds NaN or infinity", where, l, name);
                }
            }
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
            const bool scaled = slot_type_scaled(layer.type);
            contents.cache.append_stored(l, g, layer.k.data() + first * row, layer.v.data() + first * row,
                                         scaled ? layer.k_scale.data() + first : nullptr,
                                         scaled ? layer.v_scale.data() + first : nullptr, positions);
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
