#include "model/config.hpp"

#include <algorithm>
#include <cmath>
#include <limits>
#include <set>

#include <nlohmann/json.hpp>

#include "io/read_file.hpp"
#include "tensor/error.hpp"

namespace heads {
namespace {

using Json = nlohmann::json;

// Bounds far above any Llama-family model (Llama 3.1 405B has 126 layers of
// 128 heads, d_model 16384, d_ff 53248; Gemma's vocabulary is 256000), so
// that a config.json asking for absurd sizes is an error naming it, not
// "out of memory" or an overflow further on.
constexpr std::int64_t kMaxLayers = 4096;
constexpr std::int64_t kMaxHeads = 4096;              // per layer, query or KV
constexpr std::int64_t kMaxLayerHeads = 1 << 20;      // num_hidden_layers x num_attention_heads
constexpr std::int64_t kMaxWidth = std::int64_t(1) << 24;  // hidden_size, intermediate_size, vocab_size, head_dim
// Positions are int32 in KV frames (kv.L.pos).
constexpr std::int64_t kMaxPositions = std::numeric_limits<std::int32_t>::max();

void at_most(std::int64_t value, std::int64_t bound, std::string_view what, const std::string& where) {
    if (value > bound) throw Error("{}: {} is {}, more than heads supports ({})", where, what, value, bound);
}

std::int64_t integer(const Json& config, const char* key, const std::string& where) {
    const auto found = config.find(key);
    if (found == config.end() || found->is_null()) throw Error("{}: \"{}\" is missing", where, key);
    if (!found->is_number_integer() || found->get<std::int64_t>() <= 0)
        throw Error("{}: \"{}\" must be a positive integer, not {}", where, key, found->dump());
    return found->get<std::int64_t>();
}

std::int64_t integer_or(const Json& config, const char* key, std::int64_t fallback, const std::string& where) {
    const auto found = config.find(key);
    if (found == config.end() || found->is_null()) return fallback;
    return integer(config, key, where);
}

double number_or(const Json& config, const char* key, double fallback, const std::string& where) {
    const auto found = config.find(key);
    if (found == config.end() || found->is_null()) return fallback;
    if (!found->is_number() || !(found->get<double>() > 0) || !std::isfinite(found->get<double>()))
        throw Error("{}: \"{}\" must be a positive finite number, not {}", where, key, found->dump());
    return found->get<double>();
}

// A string value, or `fallback` when absent or null.
std::string string_or(const Json& config, const char* key, const std::string& fallback, const std::string& where) {
    const auto found = config.find(key);
    if (found == config.end() || found->is_null()) return fallback;
    if (!found->is_string()) throw Error("{}: \"{}\" must be a string, not {}", where, key, found->dump());
    return found->get<std::string>();
}

std::string architecture_of(const Json& config, const std::string& where) {
    static const std::set<std::string> supported = {"LlamaForCausalLM", "MistralForCausalLM"};
    if (const auto found = config.find("architectures"); found != config.end() && !found->is_null()) {
        if (!found->is_array() || found->empty()) throw Error("{}: \"architectures\" must be a list of names", where);
        for (const auto& name : *found)
            if (name.is_string() && supported.count(name.get<std::string>())) return name.get<std::string>();
        throw Error("{}: unsupported architecture {} (heads runs LlamaForCausalLM and MistralForCausalLM)", where,
                    found->dump());
    }
    const std::string type = string_or(config, "model_type", "", where);
    if (type == "llama") return "LlamaForCausalLM";
    if (type == "mistral") return "MistralForCausalLM";
    throw Error("{}: unsupported model_type \"{}\" (heads runs llama and mistral)", where, type);
}

RopeScaling rope_scaling_of(const Json& config, const std::string& where) {
    RopeScaling scaling;
    const auto found = config.find("rope_scaling");
    if (found == config.end() || found->is_null()) return scaling;
    if (!found->is_object()) throw Error("{}: \"rope_scaling\" must be an object or null", where);
    const Json& s = *found;
    const std::string key = where + ": rope_scaling";
    const std::string type = string_or(s, "rope_type", string_or(s, "type", "", key), key);
    if (type == "default") return scaling;
    if (type == "linear") {
        scaling.type = RopeScalingType::linear;
    } else if (type == "dynamic") {
        scaling.type = RopeScalingType::dynamic;
    } else if (type == "llama3") {
        scaling.type = RopeScalingType::llama3;
        scaling.low_freq_factor = number_or(s, "low_freq_factor", 1.0, key);
        scaling.high_freq_factor = number_or(s, "high_freq_factor", 4.0, key);
        scaling.original_max_position_embeddings = integer(s, "original_max_position_embeddings", key);
        at_most(scaling.original_max_position_embeddings, kMaxPositions, "\"original_max_position_embeddings\"", key);
        if (scaling.high_freq_factor <= scaling.low_freq_factor)
            throw Error("{}: high_freq_factor must be larger than low_freq_factor", key);
    } else {
        throw Error("{}: unsupported rope_scaling type \"{}\" (heads has linear, dynamic and llama3)", where, type);
    }
    scaling.factor = number_or(s, "factor", 0, key);
    if (scaling.factor <= 0) throw Error("{}: \"factor\" is missing", key);
    return scaling;
}

std::vector<std::int32_t> id_list(const Json& value, const std::string& where, const char* key, std::int64_t bound) {
    if (!value.contains(key) || !value[key].is_array()) throw Error("{}: \"{}\" must be a list of integers", where, key);
    std::vector<std::int32_t> ids;
    for (const auto& id : value[key]) {
        if (!id.is_number_integer() || id.get<std::int64_t>() < 0 || id.get<std::int64_t>() >= bound)
            throw Error("{}: \"{}\" holds {}, not an id in 0..{}", where, key, id.dump(), bound - 1);
        ids.push_back(id.get<std::int32_t>());
    }
    return ids;
}

std::vector<LayerHeads> layout_of(const Json& layout, const LlamaConfig& c, const std::string& where) {
    if (!layout.is_object() || !layout.contains("layers") || !layout["layers"].is_array())
        throw Error("{}: \"head_layout\" must be an object with a \"layers\" list", where);
    const Json& layers = layout["layers"];
    if (std::int64_t(layers.size()) != c.n_layers)
        throw Error("{}: head_layout has {} layers, the model {}", where, layers.size(), c.n_layers);
    std::vector<LayerHeads> out;
    for (std::size_t l = 0; l < layers.size(); ++l) {
        const std::string at = fmt::format("{}: head_layout layer {}", where, l);
        if (!layers[l].is_object()) throw Error("{}: must be an object", at);
        LayerHeads heads;
        heads.query_head_ids = id_list(layers[l], at, "query_heads", c.n_heads_unpruned);
        heads.kv_head_ids = id_list(layers[l], at, "kv_heads", c.n_kv_heads_unpruned);
        heads.kv_head_of = id_list(layers[l], at, "kv_head_of", std::max<std::int64_t>(heads.n_kv_heads(), 1));
        if (heads.kv_head_of.size() != heads.query_head_ids.size())
            throw Error("{}: kv_head_of has {} entries for {} query heads", at, heads.kv_head_of.size(),
                        heads.query_head_ids.size());
        if (std::set(heads.query_head_ids.begin(), heads.query_head_ids.end()).size() != heads.query_head_ids.size())
            throw Error("{}: a query head is listed twice", at);
        if (std::set(heads.kv_head_ids.begin(), heads.kv_head_ids.end()).size() != heads.kv_head_ids.size())
            throw Error("{}: a KV head is listed twice", at);
        if (std::set(heads.kv_head_of.begin(), heads.kv_head_of.end()).size() != heads.kv_head_ids.size())
            throw Error("{}: every KV head must serve at least one query head", at);
        out.push_back(std::move(heads));
    }
    return out;
}

std::vector<LayerHeads> full_layout(const LlamaConfig& c) {
    LayerHeads heads;
    const std::int64_t group = c.n_heads_unpruned / c.n_kv_heads_unpruned;
    for (std::int64_t h = 0; h < c.n_heads_unpruned; ++h) {
        heads.query_head_ids.push_back(std::int32_t(h));
        heads.kv_head_of.push_back(std::int32_t(h / group));
    }
    for (std::int64_t g = 0; g < c.n_kv_heads_unpruned; ++g) heads.kv_head_ids.push_back(std::int32_t(g));
    return std::vector<LayerHeads>(std::size_t(c.n_layers), heads);
}

// A special token's id: an id of the vocabulary (a list's first, as
// Llama 3 lists several EOS ids), or `fallback` when absent or null.
std::int32_t token_id_or(const Json& config, const char* key, std::int32_t fallback, std::int64_t vocab_size,
                         const std::string& where) {
    const auto found = config.find(key);
    if (found == config.end() || found->is_null()) {
        if (fallback >= vocab_size)  // Llama's default id, but this vocabulary is too small for it
            throw Error("{}: no \"{}\", and Llama's default {} is not a token id of a vocabulary of {}", where, key,
                        fallback, vocab_size);
        return fallback;
    }
    const Json& first = found->is_array() && !found->empty() ? (*found)[0] : *found;
    const auto check = [&](const Json& id) {
        if (!id.is_number_integer() || id.get<std::int64_t>() < 0 || id.get<std::int64_t>() >= vocab_size ||
            (id.is_number_unsigned() && id.get<std::uint64_t>() >= std::uint64_t(vocab_size)))
            throw Error("{}: \"{}\" must be a token id from 0 to {}, not {}", where, key, vocab_size - 1,
                        id.dump());
    };
    if (found->is_array() && found->empty()) throw Error("{}: \"{}\" is an empty list", where, key);
    if (found->is_array())
        for (const Json& id : *found) check(id);
    else
        check(first);
    return std::int32_t(first.get<std::int64_t>());
}

void require_false(const Json& config, const char* key, const std::string& where) {
    const auto found = config.find(key);
    if (found != config.end() && found->is_boolean() && found->get<bool>())
        throw Error("{}: \"{}\": true is not supported (Llama has no biases)", where, key);
}

}  // namespace

std::int64_t LlamaConfig::max_layer_heads() const {
    std::int64_t most = 0;
    for (const auto& layer : layers) most = std::max(most, layer.n_heads());
    return most;
}

std::int64_t LlamaConfig::max_layer_kv_heads() const {
    std::int64_t most = 0;
    for (const auto& layer : layers) most = std::max(most, layer.n_kv_heads());
    return most;
}

LlamaConfig parse_config(std::string_view text, const std::string& where) {
    Json config;
    try {
        config = Json::parse(text);
    } catch (const Json::exception& error) {  // also a number beyond double's range (1e999)
        throw Error("{}: not valid JSON: {}", where, error.what());
    }
    if (!config.is_object()) throw Error("{}: not a JSON object", where);
    LlamaConfig c;
    c.architecture = architecture_of(config, where);
    c.d_model = integer(config, "hidden_size", where);
    c.n_layers = integer(config, "num_hidden_layers", where);
    c.n_heads_unpruned = integer(config, "num_attention_heads", where);
    c.n_kv_heads_unpruned = integer_or(config, "num_key_value_heads", c.n_heads_unpruned, where);
    c.d_ff = integer(config, "intermediate_size", where);
    c.vocab_size = integer(config, "vocab_size", where);
    const bool mistral = c.architecture == "MistralForCausalLM";
    c.max_seq_len = integer_or(config, "max_position_embeddings", mistral ? 131072 : 2048, where);
    at_most(c.n_layers, kMaxLayers, "\"num_hidden_layers\"", where);
    at_most(c.n_heads_unpruned, kMaxHeads, "\"num_attention_heads\"", where);
    at_most(c.n_kv_heads_unpruned, kMaxHeads, "\"num_key_value_heads\"", where);
    at_most(c.n_layers * c.n_heads_unpruned, kMaxLayerHeads, "\"num_hidden_layers\" x \"num_attention_heads\"", where);
    at_most(c.d_model, kMaxWidth, "\"hidden_size\"", where);
    at_most(c.d_ff, kMaxWidth, "\"intermediate_size\"", where);
    at_most(c.vocab_size, kMaxWidth, "\"vocab_size\"", where);
    at_most(c.max_seq_len, kMaxPositions, "\"max_position_embeddings\"", where);
    if (c.n_heads_unpruned % c.n_kv_heads_unpruned != 0)
        throw Error("{}: num_attention_heads {} is not a multiple of num_key_value_heads {}", where, c.n_heads_unpruned,
                    c.n_kv_heads_unpruned);
    if (c.d_model % c.n_heads_unpruned != 0 && !(config.contains("head_dim") && !config["head_dim"].is_null()))
        throw Error("{}: hidden_size {} is not a multiple of num_attention_heads {}", where, c.d_model,
                    c.n_heads_unpruned);
    c.head_dim = integer_or(config, "head_dim", c.d_model / c.n_heads_unpruned, where);
    at_most(c.head_dim, kMaxWidth, "\"head_dim\"", where);
    if (c.head_dim % 2 != 0) throw Error("{}: head_dim {} is odd; rotary embedding needs pairs", where, c.head_dim);
    c.rms_norm_eps = number_or(config, "rms_norm_eps", 1e-6, where);
    c.rope = {c.head_dim, number_or(config, "rope_theta", 10000.0, where), c.max_seq_len, rope_scaling_of(config, where)};
    if (const auto found = config.find("tie_word_embeddings"); found != config.end() && !found->is_null()) {
        if (!found->is_boolean()) throw Error("{}: \"tie_word_embeddings\" must be true or false", where);
        c.tie_word_embeddings = found->get<bool>();
    }
    // Mistral: transformers' default window is 4096, null means none; Llama has none.
    if (mistral) c.sliding_window = config.contains("sliding_window") ? integer_or(config, "sliding_window", 0, where) : 4096;
    if (const std::string act = string_or(config, "hidden_act", "silu", where); act != "silu")
        throw Error("{}: hidden_act \"{}\" is not supported (Llama uses silu)", where, act);
    require_false(config, "attention_bias", where);
    require_false(config, "mlp_bias", where);
    c.bos_token_id = token_id_or(config, "bos_token_id", 1, c.vocab_size, where);
    c.eos_token_id = token_id_or(config, "eos_token_id", 2, c.vocab_size, where);
    if (const auto found = config.find("head_layout"); found != config.end() && !found->is_null()) {
        c.layers = layout_of(*found, c, where);
        c.pruned = true;
    } else {
        c.layers = full_layout(c);
    }
    return c;
}

std::string read_config_json(const std::filesystem::path& model_dir) {
    return read_file(model_dir / "config.json", "the model's config.json", FileKinds::regular_only);
}

LlamaConfig read_config(const std::filesystem::path& model_dir) {
    return parse_config(read_config_json(model_dir), (model_dir / "config.json").string());
}

std::string head_layout_json(const std::vector<LayerHeads>& layers) {
    // Keys in the order man/heads.7 shows them.
    nlohmann::ordered_json list = nlohmann::ordered_json::array();
    for (const auto& layer : layers)
        list.push_back(
            {{"query_heads", layer.query_head_ids}, {"kv_heads", layer.kv_head_ids}, {"kv_head_of", layer.kv_head_of}});
    return nlohmann::ordered_json{{"layers", list}}.dump();
}

}  // namespace heads
