#include "model/model.hpp"

#include <algorithm>
#include <optional>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "model/config.hpp"
#include "model/weight_cache.hpp"
#include "model/weights.hpp"
#include "tensor/error.hpp"
#include "tensor/quote.hpp"

namespace heads {

Precision precision_named(std::string_view name) {
    if (name == "auto") return Precision::automatic;
    if (name == "f32") return Precision::f32;
    if (name == "bf16") return Precision::bf16;
    throw Error("unknown precision {} (heads knows: auto, f32, bf16)", quote(name));
}

namespace {

// Looks tensors up by name and checks them against what the config implies.
class Binder {
public:
    Binder(const WeightFiles& weights, const std::filesystem::path& dir) : weights_(weights), dir_(dir) {}

    const Tensor* find(const std::string& name) const { return weights_.find(name); }

    const Tensor& get(const std::string& name, const Shape& shape) const {
        const Tensor* tensor = weights_.find(name);
        if (!tensor) throw Error("{}: tensor {} is missing", dir_.string(), name);
        if (tensor->shape() != shape)
            throw Error("{}: tensor {} has shape {}, the config implies {}", dir_.string(), name,
                        shape_string(tensor->shape()), shape_string(shape));
        if (tensor->dtype() != DType::F32 && tensor->dtype() != DType::BF16 && tensor->dtype() != DType::F16)
            throw Error("{}: tensor {} is {}; heads reads F32, BF16 and F16 weights", dir_.string(), name,
                        dtype_name(tensor->dtype()));
        return *tensor;
    }

    // A zero-head layer's attention tensors are absent (or empty).
    void absent(const std::string& name) const {
        const Tensor* tensor = weights_.find(name);
        if (tensor && tensor->numel() != 0)
            throw Error("{}: tensor {} is present, but head_layout gives its layer no heads", dir_.string(), name);
    }

private:
    const WeightFiles& weights_;
    const std::filesystem::path& dir_;
};

std::vector<float> vector_of(const Tensor& tensor) { return tensor.to_f32(); }

ComputeType compute_for(Precision precision, const WeightFiles& weights) {
    switch (precision) {
    case Precision::f32: return ComputeType::f32;
    case Precision::bf16: return ComputeType::bf16;
    case Precision::automatic: break;
    }
    for (const auto& [name, tensor] : weights.tensors())
        if (tensor.rank() == 2 && tensor.dtype() != DType::BF16) return ComputeType::f32;
    return ComputeType::bf16;
}

}  // namespace

std::shared_ptr<const Model> Model::load(Context& ctx, const std::filesystem::path& dir, const LoadOptions& options) {
    auto model = std::shared_ptr<Model>(new Model());
    if (!std::filesystem::exists(dir / "config.json"))
        throw Error("{}: not a model directory (no config.json)", dir.string());
    const std::string config_json = read_config_json(dir);
    model->config_ = parse_config(config_json, (dir / "config.json").string());
    model->dir_ = dir;
    auto weights = std::make_shared<WeightFiles>(WeightFiles::open(dir));
    model->fingerprint_ = model_fingerprint(config_json, *weights);
    const LlamaConfig& c = model->config_;
    const Binder bind(*weights, dir);
    const std::int64_t d = c.d_model, head_dim = c.head_dim;

    // Every check before any packing: a broken model fails fast.
    model->embedding_ = bind.get("model.embed_tokens.weight", {c.vocab_size, d});
    const Tensor* lm_head = c.tie_word_embeddings ? &model->embedding_ : &bind.get("lm_head.weight", {c.vocab_size, d});
    struct LayerTensors {
        const Tensor *attn_norm, *q = nullptr, *k = nullptr, *v = nullptr, *o = nullptr, *ffn_norm, *gate, *up, *down;
    };
    std::vector<LayerTensors> tensors;
    for (std::int64_t l = 0; l < c.n_layers; ++l) {
        const std::string p = fmt::format("model.layers.{}.", l);
        const LayerHeads& heads = c.layers[std::size_t(l)];
        LayerTensors t{};
        t.attn_norm = &bind.get(p + "input_layernorm.weight", {d});
        if (heads.n_heads() > 0) {
            t.q = &bind.get(p + "self_attn.q_proj.weight", {heads.n_heads() * head_dim, d});
            t.k = &bind.get(p + "self_attn.k_proj.weight", {heads.n_kv_heads() * head_dim, d});
            t.v = &bind.get(p + "self_attn.v_proj.weight", {heads.n_kv_heads() * head_dim, d});
            t.o = &bind.get(p + "self_attn.o_proj.weight", {d, heads.n_heads() * head_dim});
        } else {
            for (const char* name : {"q_proj", "k_proj", "v_proj", "o_proj"}) bind.absent(p + "self_attn." + name + ".weight");
        }
        t.ffn_norm = &bind.get(p + "post_attention_layernorm.weight", {d});
        t.gate = &bind.get(p + "mlp.gate_proj.weight", {c.d_ff, d});
        t.up = &bind.get(p + "mlp.up_proj.weight", {c.d_ff, d});
        t.down = &bind.get(p + "mlp.down_proj.weight", {d, c.d_ff});
        tensors.push_back(t);
    }
    const Tensor& final_norm = bind.get("model.norm.weight", {d});

    // The matrices to pack, in a fixed order: from the weight cache when it
    // holds them for this model, ISA and format, else packed now (and saved).
    // Weights used as the file's own rows need no packing, hence no cache.
    const WeightFormat format = heads::weight_format(ctx, compute_for(options.precision, *weights));
    std::vector<CachedMatrixSpec> specs;
    auto add = [&](std::string name, std::vector<Tensor> parts) {
        std::int64_t out = 0;
        for (const auto& part : parts) out += part.dim(0);
        const std::int64_t in = parts[0].dim(1);
        specs.push_back({std::move(name), in, out, std::move(parts)});
    };
    for (std::size_t l = 0; l < tensors.size(); ++l) {
        const LayerTensors& t = tensors[l];
        if (t.q) {
            add(fmt::format("layers.{}.qkv", l), {*t.q, *t.k, *t.v});
            add(fmt::format("layers.{}.o", l), {*t.o});
        }
        add(fmt::format("layers.{}.gate_up", l), {*t.gate, *t.up});
        add(fmt::format("layers.{}.down", l), {*t.down});
    }
    add("lm_head", {*lm_head});

    const bool copies = std::any_of(specs.begin(), specs.end(),
                                    [&](const CachedMatrixSpec& spec) { return packing_copies(spec.parts, format); });
    std::optional<WeightCache> cache;
    if (const auto directory = copies ? WeightCache::directory() : std::nullopt) {
        std::uint64_t bytes = 0;
        for (const auto& spec : specs) bytes += std::uint64_t(spec.in * spec.out) * (compute_of(format) == ComputeType::bf16 ? 2 : 4);
        if (bytes >= WeightCache::kMinimumBytes) {
            const std::string format_text = format_name(format);
            nlohmann::json key = {{"format", 2}, {"fingerprint", model->fingerprint_}, {"isa", ctx.isa()},
                                  {"onednn", Context::onednn_version()}, {"weights", format_text}};
            for (const auto& file : weights->files())
                key["files"].push_back({file.path.filename().string(), file.size, file.mtime_ns});
            cache.emplace(*directory / fmt::format("{}-{}-{}.weights", model->fingerprint_, ctx.isa(), format_text),
                          key.dump());
        }
    }
    std::vector<PackedMatrix> packed;
    if (cache) {
        if (auto loaded = cache->load(specs, format)) packed = std::move(*loaded);
    }
    if (packed.empty()) {
        for (const auto& spec : specs) packed.push_back(pack_matrix(ctx, spec.parts, format));
        if (cache) cache->save(specs, packed);
    }
    model->weight_cache_ = cache ? cache->path() : std::filesystem::path();

    std::size_t next = 0;
    for (const auto& t : tensors) {
        LayerWeights w;
        w.attn_norm = vector_of(*t.attn_norm);
        if (t.q) {
            w.qkv = std::move(packed[next++]);
            w.o = std::move(packed[next++]);
        }
        w.ffn_norm = vector_of(*t.ffn_norm);
        w.gate_up = std::move(packed[next++]);
        w.down = std::move(packed[next++]);
        model->layers_.push_back(std::move(w));
    }
    model->final_norm_ = vector_of(final_norm);
    model->lm_head_ = std::move(packed[next++]);
    model->weight_format_ = format;
    model->files_ = weights;
    return model;
}

void Model::embed(float* out, std::int32_t token) const {
    const std::size_t d = std::size_t(config_.d_model);
    convert_to_f32(out, embedding_.dtype(), embedding_.bytes().data() + std::size_t(token) * d * dtype_size(embedding_.dtype()), d);
}

}  // namespace heads
