#include "eval/frames.hpp"

#include <fmt/format.h>
#include <fmt/ranges.h>

#include "kv/kv_frame.hpp"
#include "safetensors/keys.hpp"

namespace heads {
namespace {

Tensor f32_copy(Shape shape, std::span<const float> values) {
    return Tensor::copy_of(DType::F32, std::move(shape), std::as_bytes(values));
}

}  // namespace

Metadata frame_metadata(std::string_view kind, const Model& model, std::span<const std::int32_t> tokens) {
    Metadata metadata;
    metadata[std::string(keys::kind)] = std::string(kind);
    metadata[std::string(keys::model)] = model.fingerprint();
    metadata[std::string(keys::tokens)] = fmt::format("{}", fmt::join(tokens, " "));
    return metadata;
}

std::vector<Frame> sequence_frames(Session& session, std::span<const std::int32_t> tokens, const FrameRequest& request) {
    const Model& model = session.model();
    const LlamaConfig& c = model.config();
    const std::int64_t n = std::int64_t(tokens.size());
    session.reset();

    ForwardProbes probes;
    probes.hidden_layers = request.hidden_layers;
    probes.attention_layers = request.attention_layers;
    probes.received = request.kv;
    probes.recent_queries = request.recent_queries;
    const bool probing = !request.hidden_layers.empty() || !request.attention_layers.empty() || request.kv;
    ForwardRequest forward;
    forward.tokens = tokens;
    forward.logits = request.logits;
    forward.probes = probing ? &probes : nullptr;
    const ForwardResult result = session.forward(forward);

    std::vector<Frame> frames;
    if (request.logits != LogitRows::none) {
        Frame frame;
        frame.metadata = frame_metadata(kinds::logits, model, tokens);
        const std::int64_t rows = request.logits == LogitRows::all ? n : 1;
        frame.add("logits", f32_copy({rows, c.vocab_size}, result.logits));
        frames.push_back(std::move(frame));
    }
    if (!request.hidden_layers.empty()) {
        Frame frame;
        frame.metadata = frame_metadata(kinds::hidden, model, tokens);
        for (auto l : request.hidden_layers)
            if (!frame.find(fmt::format("hidden.{}", l))) frame.add(fmt::format("hidden.{}", l), f32_copy({n, c.d_model}, probes.hidden.at(l)));
        frames.push_back(std::move(frame));
    }
    if (!request.attention_layers.empty()) {
        Frame frame;
        frame.metadata = frame_metadata(kinds::attention, model, tokens);
        for (auto l : request.attention_layers) {
            const std::string name = fmt::format("attention.{}", l);
            if (frame.find(name)) continue;
            const std::int64_t heads = c.layers[std::size_t(l)].n_heads();
            const auto found = probes.attention.find(l);
            const std::span<const float> probs = found == probes.attention.end() ? std::span<const float>() : found->second;
            frame.add(name, f32_copy({heads, n, heads ? probes.key_slots[std::size_t(l)] : n}, probs));
        }
        frames.push_back(std::move(frame));
    }
    if (request.kv) {
        KvReceived received{probes.received_all, probes.received_recent, probes.key_slots, request.recent_queries};
        KvFrameInfo info{model.fingerprint(), std::vector<std::int32_t>(tokens.begin(), tokens.end()), "full"};
        frames.push_back(kv_to_frame(session.cache(), info, &received));
    }
    return frames;
}

}  // namespace heads
