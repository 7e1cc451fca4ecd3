#pragma once
// config.json of a Hugging Face Llama or Mistral model, checked strictly, and
// the per-layer head layout (pruned models record theirs in config.json under
// "head_layout"; man/heads.7 documents the extension).

#include <cstdint>
#include <filesystem>
#include <string>
#include <string_view>
#include <vector>

#include "ops/rope.hpp"

namespace heads {

// The attention heads one layer keeps. A head has two names: its original
// id (in the unpruned model: what head tables and prune-heads speak of) and
// its index in the layer (the row block of its weights, its place in masks,
// attention tensors and the KV cache); they are equal until a layer is pruned.
struct LayerHeads {
    std::vector<std::int32_t> query_head_ids;  // [n_heads_l] original id of each query head, by index
    std::vector<std::int32_t> kv_head_ids;     // [n_kv_heads_l] original id of each KV head, by index
    std::vector<std::int32_t> kv_head_of;      // [n_heads_l] index (into kv_head_ids) of the KV head serving each
    std::int64_t n_heads() const { return std::int64_t(query_head_ids.size()); }
    std::int64_t n_kv_heads() const { return std::int64_t(kv_head_ids.size()); }
};

struct LlamaConfig {
    std::string architecture;       // "LlamaForCausalLM" or "MistralForCausalLM"
    std::int64_t d_model = 0;
    std::int64_t n_layers = 0;
    std::int64_t n_heads_unpruned = 0;     // num_attention_heads; a layer's count is layers[l].n_heads()
    std::int64_t n_kv_heads_unpruned = 0;  // num_key_value_heads; a layer's is layers[l].n_kv_heads()
    std::int64_t head_dim = 0;
    std::int64_t d_ff = 0;
    std::int64_t vocab_size = 0;
    std::int64_t max_seq_len = 0;   // max_position_embeddings
    double rms_norm_eps = 1e-6;
    Rope rope;
    bool tie_word_embeddings = false;
    std::int64_t sliding_window = 0;  // 0: none
    std::int32_t bos_token_id = 1;
    std::int32_t eos_token_id = 2;
    bool pruned = false;              // config.json has a head_layout
    std::vector<LayerHeads> layers;   // [n_layers]

    std::int64_t max_layer_heads() const;
    std::int64_t max_layer_kv_heads() const;
};

// Throws heads::Error "WHERE: what is wrong" (WHERE names the file).
LlamaConfig parse_config(std::string_view json, const std::string& where);
LlamaConfig read_config(const std::filesystem::path& model_dir);
// The bytes of MODEL_DIR/config.json (a regular file: a directory or FIFO
// there is an error naming it), for parse_config() and the fingerprint.
std::string read_config_json(const std::filesystem::path& model_dir);

// The "head_layout" value for config.json (what prune-heads writes).
std::string head_layout_json(const std::vector<LayerHeads>& layers);

}  // namespace heads
