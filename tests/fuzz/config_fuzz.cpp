// libFuzzer target: arbitrary bytes as a model's config.json (parse_config),
// with its head_layout and rope_scaling. A hostile input may only ever raise
// heads::Error (never nlohmann's own exceptions); what parses must be a
// configuration heads can run: sizes positive and within the bounds,
// finite positive numbers, token ids in the vocabulary, a consistent layout.

#include <cmath>
#include <cstddef>
#include <cstdint>
#include <string_view>

#include <nlohmann/json.hpp>

#include "fuzz_check.hpp"
#include "model/config.hpp"
#include "tensor/error.hpp"

namespace {

using heads::fuzz::check;

bool positive_finite(double x) { return std::isfinite(x) && x > 0; }

void check_config(const heads::LlamaConfig& c) {
    check(c.architecture == "LlamaForCausalLM" || c.architecture == "MistralForCausalLM", "an unknown architecture");
    for (const std::int64_t size : {c.d_model, c.n_layers, c.n_heads_unpruned, c.n_kv_heads_unpruned, c.head_dim, c.d_ff,
                                    c.vocab_size, c.max_seq_len})
        check(size > 0 && size <= std::int64_t(1) << 31, "a size that is not positive or beyond every bound");
    check(c.n_heads_unpruned % c.n_kv_heads_unpruned == 0, "query heads not a multiple of KV heads");
    check(c.head_dim % 2 == 0, "an odd head_dim");
    check(positive_finite(c.rms_norm_eps), "rms_norm_eps not a finite positive number");
    check(positive_finite(c.rope.theta), "rope_theta not a finite positive number");
    check(c.rope.head_dim == c.head_dim && c.rope.max_position_embeddings == c.max_seq_len, "RoPE of another shape");
    const heads::RopeScaling& s = c.rope.scaling;
    if (s.type != heads::RopeScalingType::none) check(positive_finite(s.factor), "a rope_scaling factor not finite and positive");
    if (s.type == heads::RopeScalingType::llama3)
        check(positive_finite(s.low_freq_factor) && positive_finite(s.high_freq_factor) &&
                  s.high_freq_factor > s.low_freq_factor && s.original_max_position_embeddings > 0,
              "llama3 rope_scaling parameters out of range");
    check(c.sliding_window >= 0, "a negative sliding window");
    check(c.bos_token_id >= 0 && c.bos_token_id < c.vocab_size, "bos_token_id outside the vocabulary");
    check(c.eos_token_id >= 0 && c.eos_token_id < c.vocab_size, "eos_token_id outside the vocabulary");
    check(std::int64_t(c.layers.size()) == c.n_layers, "a layout of another number of layers");
    for (const auto& layer : c.layers) {
        check(layer.kv_head_of.size() == layer.query_head_ids.size(), "kv_head_of is not one per query head");
        for (const auto g : layer.kv_head_of) check(g >= 0 && g < layer.n_kv_heads(), "kv_head_of names no KV head");
        for (const auto id : layer.query_head_ids) check(id >= 0 && id < c.n_heads_unpruned, "a query head id out of range");
        for (const auto id : layer.kv_head_ids) check(id >= 0 && id < c.n_kv_heads_unpruned, "a KV head id out of range");
    }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    const std::string_view text(reinterpret_cast<const char*>(data), size);
    try {
        check_config(heads::parse_config(text, "config.json"));
    } catch (const heads::Error& error) {
        check(std::string_view(error.what()).starts_with("config.json: "), "an error that does not name config.json");
    }
    return 0;
}
