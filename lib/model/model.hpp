#pragma once
// A loaded model: its config, fingerprint and weights, read-only once loaded,
// so one Model serves any number of Sessions (and a draft model is just a
// second Model). Weight matrices are packed for oneDNN once at load.

#include <cstdint>
#include <filesystem>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "model/config.hpp"
#include "ops/context.hpp"
#include "ops/matmul.hpp"
#include "tensor/tensor.hpp"

namespace heads {

// The arithmetic of the weight matrices: f32; bf16 (bf16 weights, rounded
// to bf16 first when the file holds f32 or f16, multiplied in bf16 where the
// CPU has AVX512-BF16, else widened to f32 in registers: ops/matmul.hpp); or
// auto: bf16 when the model's matrices are stored in bf16, else f32.
enum class Precision { automatic, f32, bf16 };
// "auto", "f32" or "bf16"; throws heads::Error for another name.
Precision precision_named(std::string_view name);

struct LoadOptions {
    Precision precision = Precision::automatic;
};

struct LayerWeights {
    std::vector<float> attn_norm;  // [d_model]
    PackedMatrix qkv;              // d_model → (n_heads_l + 2·n_kv_heads_l)·head_dim; empty in a layer without heads
    PackedMatrix o;                // n_heads_l·head_dim → d_model
    std::vector<float> ffn_norm;   // [d_model]
    PackedMatrix gate_up;          // d_model → 2·d_ff (gate rows, then up rows)
    PackedMatrix down;             // d_ff → d_model
};

class Model {
public:
    // Checks every expected tensor's presence, shape and dtype first; throws
    // heads::Error naming the file and the tensor.
    static std::shared_ptr<const Model> load(Context& ctx, const std::filesystem::path& dir, const LoadOptions& options = {});

    const LlamaConfig& config() const { return config_; }
    const std::string& fingerprint() const { return fingerprint_; }
    const std::filesystem::path& dir() const { return dir_; }
    std::int64_t vocab_size() const { return config_.vocab_size; }
    std::int64_t context_length() const { return config_.max_seq_len; }
    WeightFormat weight_format() const { return weight_format_; }
    // The weight cache file used (read or written), or empty.
    const std::filesystem::path& weight_cache() const { return weight_cache_; }

    const LayerWeights& layer(std::int64_t l) const { return layers_[std::size_t(l)]; }
    const std::vector<float>& final_norm() const { return final_norm_; }  // [d_model]
    const PackedMatrix& lm_head() const { return lm_head_; }              // d_model → vocab
    // out [d_model] = the embedding row of `token` as float.
    void embed(float* out, std::int32_t token) const;

private:
    LlamaConfig config_;
    std::string fingerprint_;
    std::filesystem::path dir_;
    WeightFormat weight_format_ = WeightFormat::onednn_f32;
    std::filesystem::path weight_cache_;
    Tensor embedding_;  // [vocab_size, d_model], a view of the file
    std::shared_ptr<const void> files_;  // keeps the mapped weight files alive
    std::vector<LayerWeights> layers_;
    std::vector<float> final_norm_;
    PackedMatrix lm_head_;
};

}  // namespace heads
