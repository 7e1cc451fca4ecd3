#include "kv/kv_frame.hpp"

#include <algorithm>
#include <cmath>
#include <cstring>

#include <fmt/format.h>
#include <fmt/ranges.h>

#include "io/id_line.hpp"
#include "safetensors/keys.hpp"
#include "tensor/error.hpp"

namespace heads {
namespace {

Tensor f32_tensor(Shape shape) { return Tensor::zeros(DType::F32, std::move(shape)); }

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
        const std::int64_t n_kv_heads = cache.n_kv_heads(l), slots = cache.max_slots(l);
        Tensor k = f32_tensor({n_kv_heads, slots, head_dim}), v = f32_tensor({n_kv_heads, slots, head_dim});
        Tensor pos = Tensor::zeros(DType::I32, {n_kv_heads, slots});
        auto k_data = k.mutable_data<float>(), v_data = v.mutable_data<float>();
        auto pos_data = pos.mutable_data<std::int32_t>();
        for (std::int64_t g = 0; g < n_kv_heads; ++g) {
            const KvHead& head = cache.head(l, g);
            const std::size_t bytes = sizeof(float) * std::size_t(head.slots * head_dim);
            std::memcpy(k_data.data() + g * slots * head_dim, head.k.data(), bytes);
            std::memcpy(v_data.data() + g * slots * head_dim, head.v.data(), bytes);
            for (std::int64_t s = 0; s < slots; ++s) pos_data[std::size_t(g * slots + s)] = s < head.slots ? head.pos.data()[s] : -1;
        }
        frame.add(fmt::format("kv.{}.k", l), std::move(k));
        frame.add(fmt::format("kv.{}.v", l), std::move(v));
        frame.add(fmt::format("kv.{}.pos", l), std::move(pos));
        if (received) {
            // Re-laid on this frame's slot axis (the probe's may be wider if slots were dropped since).
            const std::int64_t from_slots = received->slots[std::size_t(l)];
            for (const bool recent : {false, true}) {
                const auto& source = recent ? received->recent : received->all;
                Tensor mass = f32_tensor({n_kv_heads, slots});
                auto out = mass.mutable_data<float>();
                const auto& in = source[std::size_t(l)];
                for (std::int64_t g = 0; g < n_kv_heads && !in.empty(); ++g)
                    for (std::int64_t s = 0; s < std::min(slots, from_slots); ++s)
                        out[std::size_t(g * slots + s)] = in[std::size_t(g * from_slots + s)];
                frame.add(fmt::format("kv.{}.{}", l, recent ? "received_recent" : "received"), std::move(mass));
            }
        }
    }
    return frame;
}

std::string kv_frame_policy(const Frame& frame) {
    const auto policy = frame.metadata.find(keys::policy);
    return policy == frame.metadata.end() ? KvFrameInfo().policy : policy->second;
}

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
    std::vector<std::int64_t> kv_head_counts;
    std::int64_t head_dim = -1;
    while (const Tensor* k = frame.find(fmt::format("kv.{}.k", kv_head_counts.size()))) {
        const std::size_t l = kv_head_counts.size();
        const Tensor* v = frame.find(fmt::format("kv.{}.v", l));
        const Tensor* pos = frame.find(fmt::format("kv.{}.pos", l));
        if (!v || !pos) throw Error("{}: layer {} has kv.{}.k but not kv.{}.v and kv.{}.pos", where, l, l, l, l);
        if (k->rank() != 3 || v->shape() != k->shape())
            throw Error("{}: kv.{}.k {} and kv.{}.v {} must be the same [n_kv_heads, slots, head_dim]", where, l,
                        shape_string(k->shape()), l, shape_string(v->shape()));
        if (pos->dtype() != DType::I32 || pos->shape() != Shape{k->dim(0), k->dim(1)})
            throw Error("{}: kv.{}.pos must be I32 [{}, {}]", where, l, k->dim(0), k->dim(1));
        if (!is_floating(k->dtype()) || !is_floating(v->dtype()))
            throw Error("{}: kv.{}.k and kv.{}.v must be floating point", where, l, l);
        if (k->dim(0) > 0) {
            if (head_dim >= 0 && k->dim(2) != head_dim)
                throw Error("{}: kv.{}.k has head_dim {}, earlier layers {}", where, l, k->dim(2), head_dim);
            head_dim = k->dim(2);
        }
        kv_head_counts.push_back(k->dim(0));
    }
    if (kv_head_counts.empty()) throw Error("{}: the KV frame has no kv.0.k", where);
    contents.cache = KvCache(kv_head_counts, std::max<std::int64_t>(head_dim, 0));
    head_dim = contents.cache.head_dim();
    for (std::int64_t l = 0; l < std::int64_t(kv_head_counts.size()); ++l) {
        const Tensor& k = frame.at(fmt::format("kv.{}.k", l));
        const std::vector<float> k_data = k.to_f32(), v_data = frame.at(fmt::format("kv.{}.v", l)).to_f32();
        for (const auto& [name, data] : {std::pair{"k", &k_data}, {"v", &v_data}})
            if (!std::all_of(data->begin(), data->end(), [](float value) { return std::isfinite(value); }))
                throw Error("{}: kv.{}.{} holds NaN or infinity", where, l, name);
        const auto pos_data = frame.at(fmt::format("kv.{}.pos", l)).data<std::int32_t>();
        const std::int64_t slots = k.dim(1);
        for (std::int64_t g = 0; g < kv_head_counts[std::size_t(l)]; ++g) {
            std::int64_t used = slots;  // up to the last slot in use: trailing -1 slots are padding
            while (used > 0 && pos_data[std::size_t(g * slots + used - 1)] == -1) --used;
            // A slot holds one of the sequence's positions (or a synthetic one,
            // negative): a position past heads.tokens means the two disagree.
            const std::int64_t n_tokens = std::int64_t(contents.info.tokens.size());
            for (std::int64_t slot = 0; slot < used; ++slot)
                if (const std::int32_t p = pos_data[std::size_t(g * slots + slot)]; p >= n_tokens)
                    throw Error("{}: kv.{}.pos: KV head {} slot {} holds position {}, but heads.tokens has {} tokens",
                                where, l, g, slot, p, n_tokens);
            const std::int64_t first = g * slots * head_dim;  // of head g in [n_kv_heads, slots, head_dim]
            contents.cache.append(l, g, k_data.data() + first, v_data.data() + first, head_dim,
                                  pos_data.subspan(std::size_t(g * slots), std::size_t(used)));
        }
        for (auto [name, target] : {std::pair{"received", &contents.received}, {"received_recent", &contents.received_recent}}) {
            const Tensor* mass = frame.find(fmt::format("kv.{}.{}", l, name));
            if (!mass) continue;
            if (mass->dtype() != DType::F32 || mass->shape() != Shape{kv_head_counts[std::size_t(l)], slots})
                throw Error("{}: kv.{}.{} must be F32 [{}, {}]", where, l, name, kv_head_counts[std::size_t(l)], slots);
            target->resize(kv_head_counts.size());
            (*target)[std::size_t(l)] = *mass;
        }
    }
    return contents;
}

}  // namespace heads
