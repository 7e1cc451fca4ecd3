#pragma once
// The frames `infer` writes for one sequence (man/heads.7): the sequence is
// run from an empty cache in one forward pass, and each kind asked for
// becomes one frame, in this order: logits, hidden, attention, kv.

#include <cstdint>
#include <span>
#include <string_view>
#include <vector>

#include "eval/layer_list.hpp"
#include "model/session.hpp"
#include "safetensors/frame.hpp"

namespace heads {

struct FrameRequest {
    LogitRows logits = LogitRows::last;         // none: no logits frame
    std::vector<std::int64_t> hidden_layers;    // hidden.L [seq_len, d_model]: residual stream after layer L
    std::vector<std::int64_t> attention_layers; // attention.L [n_heads_l, seq_len, seq_len]
    bool kv = false;                            // the KV cache, with received-attention extras
    std::int64_t recent_queries = 32;
};

std::vector<Frame> sequence_frames(Session& session, std::span<const std::int32_t> tokens, const FrameRequest& request);

// The metadata every frame of a sequence carries: kind, model, tokens.
Metadata frame_metadata(std::string_view kind, const Model& model, std::span<const std::int32_t> tokens);

}  // namespace heads
