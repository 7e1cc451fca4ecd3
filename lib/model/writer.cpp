#include "model/writer.hpp"

#include <stdlib.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <map>
#include <numeric>
#include <optional>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "io/deferred_signals.hpp"
#include "io/output.hpp"
#include "io/read_file.hpp"
#include "model/weights.hpp"
#include "safetensors/write.hpp"
#include "tensor/dtype.hpp"
#include "tensor/error.hpp"

namespace heads {
namespace {

namespace fs = std::filesystem;
using Json = nlohmann::ordered_json;  // config.json keeps its keys in the source's order

// Files beside the weights that describe how to use them; copied as they are.
constexpr const char* kCopiedFiles[] = {"tokenizer.model", "tokenizer.json", "tokenizer_config.json",
                                        "special_tokens_map.json", "generation_config.json"};

// What one layer keeps, as indices into the source's layer.
struct LayerPlan {
    std::vector<std::int64_t> query;  // source index of each kept query head, in order
    std::vector<std::int64_t> kv;     // source index of each kept KV head, in order
    std::vector<bool> query_kept;     // [source n_heads_l]
    // Pooling: [kept KV heads] the source KV heads averaged into each (kv[g] is
    // pooled[g]'s first); empty: kept KV head g is source KV head kv[g].
    std::vector<std::vector<std::int64_t>> pooled;
};

std::int64_t index_of(const std::vector<std::int32_t>& ids, std::int32_t id, const char* what, std::size_t layer) {
    const auto found = std::find(ids.begin(), ids.end(), id);
    if (found == ids.end()) throw Error("layer {}: {} {} is not in the source model", layer, what, id);
    return found - ids.begin();
}

std::vector<LayerPlan> plan_edit(const LlamaConfig& source, const std::vector<LayerHeads>& keep) {
    if (keep.size() != source.layers.size())
        throw Error("the new layout has {} layers, the source model {}", keep.size(), source.layers.size());
    std::vector<LayerPlan> plans;
    for (std::size_t l = 0; l < keep.size(); ++l) {
        const LayerHeads &from = source.layers[l], &to = keep[l];
        LayerPlan plan;
        plan.query_kept.assign(std::size_t(from.n_heads()), false);
        for (const auto id : to.kv_head_ids) plan.kv.push_back(index_of(from.kv_head_ids, id, "KV head", l));
        for (std::size_t i = 0; i < to.query_head_ids.size(); ++i) {
            const std::int64_t index = index_of(from.query_head_ids, to.query_head_ids[i], "query head", l);
            if (plan.query_kept[std::size_t(index)]) throw Error("layer {}: query head {} is kept twice", l, to.query_head_ids[i]);
            const std::size_t kv = std::size_t(to.kv_head_of.at(i));
            if (kv >= plan.kv.size() || plan.kv[kv] != from.kv_head_of[std::size_t(index)])
                throw Error("layer {}: query head {} would be served by another KV head than in the source", l,
                            to.query_head_ids[i]);
            plan.query.push_back(index);
            plan.query_kept[std::size_t(index)] = true;
        }
        plans.push_back(std::move(plan));
    }
    return plans;
}

// Whether groups[g] is g·m, ..., g·m + m − 1 for every g (m the group size).
bool contiguous(const std::vector<std::vector<std::int64_t>>& groups) {
    std::int64_t next = 0;
    for (const auto& group : groups)
        for (const std::int64_t member : group)
            if (member != next++) return false;
    return true;
}

// Every query head kept; each layer's KV heads pooled in the edit's groups (or contiguous ones) into `kv_heads`.
std::vector<LayerPlan> plan_pooling(const LlamaConfig& source, const HeadEdit& edit) {
    const std::int64_t kv_heads = edit.kv_heads;
    check_pooling(source, kv_heads);
    if (!edit.kv_groups.empty() && edit.kv_groups.size() != source.layers.size())
        throw Error("KV head groups for {} layers, the model has {}", edit.kv_groups.size(), source.layers.size());
    std::vector<LayerPlan> plans;
    for (std::size_t l = 0; l < source.layers.size(); ++l) {
        const LayerHeads& from = source.layers[l];
        const std::int64_t size = from.n_kv_heads() / kv_heads;
        LayerPlan plan;
        for (std::int64_t i = 0; i < from.n_heads(); ++i) plan.query.push_back(i);
        plan.query_kept.assign(std::size_t(from.n_heads()), true);
        if (edit.kv_groups.empty()) {
            for (std::int64_t g = 0; g < kv_heads; ++g) {
                plan.pooled.emplace_back(std::size_t(size));
                std::iota(plan.pooled.back().begin(), plan.pooled.back().end(), g * size);
            }
        } else {
            plan.pooled = edit.kv_groups[l];
        }
        // The bytes are sliced by these indices: check that they are a partition into equal groups.
        std::vector<bool> seen(std::size_t(from.n_kv_heads()), false);
        if (std::int64_t(plan.pooled.size()) != kv_heads)
            throw Error("layer {}: {} KV head groups, not {}", l, plan.pooled.size(), kv_heads);
        for (const auto& group : plan.pooled) {
            if (std::int64_t(group.size()) != size)
                throw Error("layer {}: a KV head group of {}, not {}", l, group.size(), size);
            for (const std::int64_t member : group) {
                if (member < 0 || member >= from.n_kv_heads() || seen[std::size_t(member)])
                    throw Error("layer {}: KV head {} is not in the model or in two groups", l, member);
                seen[std::size_t(member)] = true;
            }
            plan.kv.push_back(group.front());
        }
        plans.push_back(std::move(plan));
    }
    return plans;
}

// The layout of a pooled model whose groups are not all contiguous: every query head,
// each served by the pooled KV head of the group its source KV head went into.
std::vector<LayerHeads> pooled_layout(const LlamaConfig& source, const std::vector<LayerPlan>& plans) {
    std::vector<LayerHeads> layers;
    for (std::size_t l = 0; l < plans.size(); ++l) {
        const LayerHeads& from = source.layers[l];
        std::vector<std::int32_t> group_of(std::size_t(from.n_kv_heads()));
        for (std::size_t g = 0; g < plans[l].pooled.size(); ++g)
            for (const std::int64_t member : plans[l].pooled[g]) group_of[std::size_t(member)] = std::int32_t(g);
        LayerHeads heads;
        heads.query_head_ids = from.query_head_ids;
        for (std::size_t g = 0; g < plans[l].pooled.size(); ++g) heads.kv_head_ids.push_back(std::int32_t(g));
        for (const std::int32_t kv : from.kv_head_of) heads.kv_head_of.push_back(group_of[std::size_t(kv)]);
        layers.push_back(std::move(heads));
    }
    return layers;
}

double load_element(const std::byte* at, DType dtype) {
    std::uint16_t half = 0;
    float single = 0;
    switch (dtype) {
        case DType::F32: std::memcpy(&single, at, 4); return single;
        case DType::BF16: std::memcpy(&half, at, 2); return bf16_to_f32(half);
        case DType::F16: std::memcpy(&half, at, 2); return f16_to_f32(half);
        default: throw Error("mean-pooling needs F32, BF16 or F16 weights, not {}", dtype_name(dtype));
    }
}

void store_element(std::byte* at, DType dtype, double value) {
    const float single = float(value);
    if (dtype == DType::F32) {
        std::memcpy(at, &single, 4);
        return;
    }
    const std::uint16_t half = dtype == DType::BF16 ? f32_to_bf16(single) : f32_to_f16(single);
    std::memcpy(at, &half, 2);
}

// `out` = the mean of the blocks of rows `members`, summed in double and rounded once.
void mean_of_blocks(std::vector<std::byte>& out, std::span<const std::byte> bytes,
                    const std::vector<std::int64_t>& members, std::size_t block, DType dtype) {
    const std::size_t element = dtype_size(dtype), n = block / element;
    std::vector<double> sum(n, 0.0);
    for (const std::int64_t b : members)
        for (std::size_t i = 0; i < n; ++i)
            sum[i] += load_element(bytes.data() + std::size_t(b) * block + i * element, dtype);
    out.resize(block);
    for (std::size_t i = 0; i < n; ++i) store_element(out.data() + i * element, dtype, sum[i] / double(members.size()));
}

// An attention projection of layer `layer`: 'q', 'k', 'v' or 'o'.
struct Projection {
    std::size_t layer;
    char which;
};

std::map<std::string, Projection, std::less<>> projections(const LlamaConfig& config) {
    std::map<std::string, Projection, std::less<>> names;
    for (std::size_t l = 0; l < config.layers.size(); ++l)
        for (const char which : {'q', 'k', 'v', 'o'})
            names[fmt::format("model.layers.{}.self_attn.{}_proj.weight", l, which)] = {l, which};
    return names;
}

// The temporary directory the model is built in; removed unless it was renamed into place.
class BuildDir {
public:
    explicit BuildDir(const fs::path& target) {
        std::string pattern = target.string() + ".tmp.XXXXXX";
        if (!::mkdtemp(pattern.data())) throw Error("{}: {}", target.string(), std::strerror(errno));
        path_ = pattern;
    }
    BuildDir(const BuildDir&) = delete;
    BuildDir& operator=(const BuildDir&) = delete;
    ~BuildDir() {
        if (path_.empty()) return;
        std::error_code ignored;
        fs::remove_all(path_, ignored);
    }
    const fs::path& path() const { return path_; }
    void release() { path_.clear(); }

private:
    fs::path path_;
};

// Writes one weight file of the edited model; returns its tensor names and bytes of data.
std::uint64_t write_weight_file(const fs::path& path, const Frame& source, const LlamaConfig& config,
                                const std::vector<LayerPlan>& plans, bool mask_only, std::vector<std::string>& names,
                                const DeferredSignals& signals) {
    const auto attention = projections(config);
    const std::int64_t head_dim = config.head_dim;
    std::vector<TensorSpec> specs;
    std::vector<std::pair<const Tensor*, const Projection*>> order;
    for (const auto& [name, tensor] : source) {
        const auto found = attention.find(name);
        const Projection* projection = found == attention.end() ? nullptr : &found->second;
        Shape shape = tensor.shape();
        if (projection) {  // the bytes below are sliced by these shapes: check them
            const LayerHeads& heads = config.layers[projection->layer];
            const std::int64_t rows = (projection->which == 'k' || projection->which == 'v' ? heads.n_kv_heads()
                                                                                              : heads.n_heads()) * head_dim;
            const Shape expected = projection->which == 'o' ? Shape{config.d_model, rows} : Shape{rows, config.d_model};
            if (tensor.numel() != 0 && shape != expected)
                throw Error("the source's tensor {} has shape {}, its config implies {}", name, shape_string(shape),
                            shape_string(expected));
        }
        if (projection && !mask_only) {
            const LayerPlan& plan = plans[projection->layer];
            if (plan.query.empty()) continue;  // a layer without heads has no attention tensors
            const std::int64_t kept = std::int64_t(projection->which == 'q' || projection->which == 'o'
                                                       ? plan.query.size() : plan.kv.size());
            shape[projection->which == 'o' ? 1 : 0] = kept * head_dim;
        }
        specs.push_back({name, tensor.dtype(), shape});
        order.emplace_back(&tensor, projection);
        names.push_back(name);
    }
    AtomicFile file(path);
    FrameWriter writer(file.get(), specs, source.metadata);
    std::vector<std::byte> zeros, pooled;
    for (const auto& [tensor, projection] : order) {
        signals.check();
        const std::span<const std::byte> bytes = tensor->bytes();
        if (!projection || (mask_only && projection->which != 'o')) {
            writer.write(bytes);
            continue;
        }
        const LayerPlan& plan = plans[projection->layer];
        const std::size_t element = dtype_size(tensor->dtype());
        if (projection->which != 'o') {  // rows: head_dim of them per head
            const std::size_t block = std::size_t(head_dim * tensor->dim(1)) * element;
            const bool pooling = projection->which != 'q' && !plan.pooled.empty();
            const auto& indices = projection->which == 'q' ? plan.query : plan.kv;
            for (std::size_t i = 0; i < indices.size(); ++i) {
                if (!pooling || plan.pooled[i].size() == 1) {  // one member: its bytes, exactly
                    writer.write(bytes.subspan(std::size_t(indices[i]) * block, block));
                    continue;
                }
                mean_of_blocks(pooled, bytes, plan.pooled[i], block, tensor->dtype());
                writer.write(pooled);
            }
            continue;
        }
        // o_proj [d_model, n_heads_l·head_dim]: head_dim columns per head, in every row.
        const std::size_t block = std::size_t(head_dim) * element, row = std::size_t(tensor->dim(1)) * element;
        zeros.assign(block, std::byte{0});
        for (std::int64_t r = 0; r < tensor->dim(0); ++r) {
            const auto line = bytes.subspan(std::size_t(r) * row, row);
            if (mask_only) {
                for (std::size_t i = 0; i < plan.query_kept.size(); ++i)
                    writer.write(plan.query_kept[i] ? line.subspan(i * block, block) : std::span<const std::byte>(zeros));
            } else {
                for (const std::int64_t index : plan.query) writer.write(line.subspan(std::size_t(index) * block, block));
            }
        }
    }
    writer.finish();
    file.commit();
    std::uint64_t total = 0;
    for (const auto& spec : specs) total += std::uint64_t(element_count(spec.shape)) * dtype_size(spec.dtype);
    return total;
}

void write_text(const fs::path& path, const std::string& text) {
    AtomicFile file(path);
    write_all(file.get(), text);
    file.commit();
}

Json edit_record(const LlamaConfig& source, const std::vector<LayerPlan>& plans, const std::string& fingerprint,
                 const HeadEdit& edit) {
    if (edit.kv_heads > 0) {
        Json record = {{"tool", "prune-heads"},       {"source", fingerprint},     {"method", "mean-pool"},
                       {"selection", edit.selection}, {"kv_heads", edit.kv_heads}, {"group_by", edit.group_by}};
        if (!edit.kv_groups.empty()) {  // [layer][group] the source's KV head ids pooled
            record["kv_groups"] = Json::array();
            for (const LayerPlan& plan : plans) record["kv_groups"].push_back(plan.pooled);
        }
        return record;
    }
    Json removed = Json::array();
    for (std::size_t l = 0; l < plans.size(); ++l)
        for (std::size_t i = 0; i < plans[l].query_kept.size(); ++i)
            if (!plans[l].query_kept[i]) removed.push_back(fmt::format("{}.{}", l, source.layers[l].query_head_ids[i]));
    return {{"tool", "prune-heads"},
            {"source", fingerprint},
            {"method", edit.mask_only ? "mask" : "remove"},
            {"selection", edit.selection},
            {"removed_heads", removed}};
}

// config.json indented, but each head_layout layer and each edit on one line, so that a
// model of many heads stays readable and a layer or an edit is one line to grep.
std::string config_text(const Json& config) {
    Json plain = config;
    plain.erase("head_layout");
    plain.erase(kHeadEditsKey);
    std::string text = plain.dump(2);
    text.pop_back();  // the closing brace, then the newline before it
    while (!text.empty() && text.back() == '\n') text.pop_back();
    std::string separator = plain.empty() ? "\n" : ",\n";
    const auto lines = [](const Json& list) {
        std::string out;
        for (const auto& item : list) out += (out.empty() ? "\n    " : ",\n    ") + item.dump();
        return out + "\n  ]";
    };
    if (const auto layout = config.find("head_layout"); layout != config.end()) {
        const bool layers_only = layout->is_object() && layout->size() == 1 && layout->contains("layers") &&
                                 (*layout)["layers"].is_array();
        text += separator + "  \"head_layout\": " +
                (layers_only ? "{\"layers\": [" + lines((*layout)["layers"]) + "}" : layout->dump());
        separator = ",\n";
    }
    if (const auto edits = config.find(kHeadEditsKey); edits != config.end())
        text += separator + fmt::format("  \"{}\": [", kHeadEditsKey) + lines(*edits);
    return text + "\n}\n";
}

// Puts the built directory at `target`, replacing what is there when allowed.
void move_into_place(BuildDir& built, const fs::path& target, bool replace) {
    std::error_code error;
    if (!fs::exists(target)) {
        fs::rename(built.path(), target, error);
        if (error) throw Error("{}: {}", target.string(), error.message());
        built.release();
        return;
    }
    if (!replace) throw Error("{}: already exists", target.string());
    // The old target moves aside first, so a failed rename leaves it in place.
    std::string aside = target.string() + ".old.XXXXXX";
    if (!::mkdtemp(aside.data())) throw Error("{}: {}", target.string(), std::strerror(errno));
    fs::rename(target, aside, error);
    if (error) {
        fs::remove(aside);
        throw Error("{}: {}", target.string(), error.message());
    }
    fs::rename(built.path(), target, error);
    if (error) {
        fs::rename(aside, target);
        throw Error("{}: {}", target.string(), error.message());
    }
    built.release();
    fs::remove_all(aside, error);
}

}  // namespace

void check_pooling(const LlamaConfig& source, std::int64_t kv_heads) {
    if (source.pruned)
        throw Error("--to-gqa {}: the model has a head_layout (it was pruned); pooling needs a stock layout", kv_heads);
    if (kv_heads < 1 || source.n_kv_heads_unpruned % kv_heads != 0)
        throw Error("--to-gqa {}: the model's {} KV heads per layer do not split into {} equal groups", kv_heads,
                    source.n_kv_heads_unpruned, kv_heads);
}

void write_edited_model(const fs::path& source, const fs::path& target_path, const HeadEdit& edit) {
    const fs::path target = target_path.has_filename() ? target_path : target_path.parent_path();
    const std::string source_config = read_config_json(source);
    const LlamaConfig config = parse_config(source_config, (source / "config.json").string());
    const WeightFiles weights = WeightFiles::open(source);
    const std::vector<LayerPlan> plans =
        edit.kv_heads > 0 ? plan_pooling(config, edit) : plan_edit(config, edit.keep);
    std::error_code error;
    if (fs::exists(target) && fs::equivalent(target, source, error))
        throw Error("{}: is the source model; write the new model elsewhere", target.string());
    if (fs::exists(target) && !edit.replace) throw Error("{}: already exists", target.string());

    const DeferredSignals signals;  // Ctrl-C stops at a tensor boundary, and the build directory goes
    BuildDir built(target);
    Json weight_map = Json::object();
    std::uint64_t total = 0;
    for (std::size_t f = 0; f < weights.files().size(); ++f) {
        const std::string file = weights.files()[f].path.filename().string();
        std::vector<std::string> names;
        total += write_weight_file(built.path() / file, weights.frames()[f], config, plans, edit.mask_only, names, signals);
        for (const auto& name : names) weight_map[name] = file;
    }
    if (const fs::path index = source / "model.safetensors.index.json";
        weights.files().size() != 1 || weights.files()[0].path.filename() != "model.safetensors") {
        Json json = Json::parse(read_file(index, "the model's weight index", FileKinds::regular_only));
        json["weight_map"] = weight_map;
        json["metadata"]["total_size"] = total;
        write_text(built.path() / index.filename(), json.dump(2) + "\n");
    }

    Json json = Json::parse(source_config);
    if (edit.kv_heads > 0) {
        json["num_key_value_heads"] = edit.kv_heads;
        if (!std::all_of(plans.begin(), plans.end(), [](const LayerPlan& plan) { return contiguous(plan.pooled); }))
            json["head_layout"] = Json::parse(head_layout_json(pooled_layout(config, plans)));
    } else if (!edit.mask_only)
        json["head_layout"] = Json::parse(head_layout_json(edit.keep));
    json[kHeadEditsKey].push_back(edit_record(config, plans, model_fingerprint(source_config, weights), edit));
    write_text(built.path() / "config.json", config_text(json));
    for (const char* name : kCopiedFiles) {
        if (!fs::exists(source / name)) continue;
        fs::copy_file(source / name, built.path() / name, error);
        if (error) throw Error("{}: {}", (built.path() / name).string(), error.message());
    }
    signals.check();
    move_into_place(built, target, edit.replace);
}

}  // namespace heads
