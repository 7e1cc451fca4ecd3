#include "model/weights.hpp"

#include <sys/stat.h>

#include <algorithm>
#include <set>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "io/read_file.hpp"
#include "model/config.hpp"
#include "safetensors/read.hpp"
#include "tensor/error.hpp"
#include "tensor/quote.hpp"

namespace heads {
namespace {

std::vector<std::filesystem::path> weight_paths(const std::filesystem::path& dir) {
    const auto single = dir / "model.safetensors";
    const auto index = dir / "model.safetensors.index.json";
    if (std::filesystem::exists(single)) return {single};
    if (!std::filesystem::exists(index))
        throw Error("{}: no model.safetensors or model.safetensors.index.json", dir.string());
    std::vector<std::filesystem::path> paths;
    for (const auto& shard : parse_weight_index(read_file(index, "the model's weight index", FileKinds::regular_only),
                                                index.string()))
        paths.push_back(dir / shard);
    return paths;
}

struct Fnv {
    std::uint64_t h = 1469598103934665603ull;
    void add(const void* data, std::size_t size) {
        const auto* bytes = static_cast<const unsigned char*>(data);
        for (std::size_t i = 0; i < size; ++i) {
            h ^= bytes[i];
            h *= 1099511628211ull;
        }
    }
    void add(std::string_view text) { add(text.data(), text.size()); }
};

}  // namespace

std::vector<std::string> parse_weight_index(std::string_view text, const std::string& where) {
    nlohmann::json json;
    try {
        json = nlohmann::json::parse(text);
    } catch (const nlohmann::json::exception& error) {
        throw Error("{}: not valid JSON: {}", where, error.what());
    }
    if (!json.is_object() || !json.contains("weight_map") || !json["weight_map"].is_object())
        throw Error("{}: no \"weight_map\" object", where);
    std::set<std::string> shards;
    for (const auto& [name, file] : json["weight_map"].items()) {
        if (!file.is_string()) throw Error("{}: weight_map[{}] is not a file name", where, quote(name));
        const std::string shard = file.get<std::string>();
        // A plain file name: no folder (nothing outside the model directory), no NUL (the
        // system would read a shorter name), not the directory itself.
        if (shard.empty() || shard == "." || shard == ".." || shard.find_first_of(std::string_view("/\0", 2)) != std::string::npos)
            throw Error("{}: shard {} is not a file in the model directory", where, quote(shard));
        shards.insert(shard);
    }
    if (shards.empty()) throw Error("{}: \"weight_map\" names no shard", where);
    return {shards.begin(), shards.end()};
}

WeightFiles WeightFiles::open(const std::filesystem::path& model_dir) {
    WeightFiles weights;
    for (const auto& path : weight_paths(model_dir)) {
        WeightFile file;
        file.path = path;
        weights.frames_.push_back(read_frame_file(path, &file.header_json));
        struct stat info {};
        if (::stat(path.c_str(), &info) == 0) {
            file.size = std::uint64_t(info.st_size);
            file.mtime_ns = std::int64_t(info.st_mtim.tv_sec) * 1'000'000'000 + info.st_mtim.tv_nsec;
        }
        for (const auto& [name, tensor] : weights.frames_.back()) {
            if (!weights.tensors_.emplace(name, tensor).second)
                throw Error("{}: tensor {} is also in another shard", path.string(), name);
        }
        weights.files_.push_back(std::move(file));
    }
    return weights;
}

const Tensor* WeightFiles::find(std::string_view name) const {
    const auto found = tensors_.find(name);
    return found == tensors_.end() ? nullptr : &found->second;
}

std::string model_fingerprint(std::string_view config_json, const WeightFiles& weights) {
    Fnv fnv;
    fnv.add(config_json);
    for (std::size_t f = 0; f < weights.files().size(); ++f) {
        fnv.add(weights.files()[f].header_json);
        for (const auto& [name, tensor] : weights.frames()[f]) {  // data order
            const std::byte* data = tensor.bytes().data();
            const std::size_t size = tensor.nbytes(), take = std::min<std::size_t>(64, size);
            fnv.add(data, take);
            fnv.add(data + (size - take) / 2, take);
            fnv.add(data + size - take, take);
        }
    }
    return fmt::format("{:016x}", fnv.h);
}

std::string model_fingerprint(const std::filesystem::path& model_dir) {
    const std::string config = read_config_json(model_dir);
    return model_fingerprint(config, WeightFiles::open(model_dir));
}

}  // namespace heads
