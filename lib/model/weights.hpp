#pragma once
// The weight files of a model directory: model.safetensors, or the shards a
// model.safetensors.index.json names. Tensors are views of the mmapped files.

#include <cstdint>
#include <filesystem>
#include <map>
#include <string>
#include <string_view>
#include <vector>

#include "safetensors/frame.hpp"

namespace heads {

struct WeightFile {
    std::filesystem::path path;
    std::string header_json;   // as stored (the fingerprint hashes it)
    std::uint64_t size = 0;    // bytes, and modification time in ns: a changed file
    std::int64_t mtime_ns = 0; // invalidates repacked weights cached from it
};

class WeightFiles {
public:
    // Throws heads::Error naming the file when a shard is missing or broken,
    // or a tensor name appears in two shards.
    static WeightFiles open(const std::filesystem::path& model_dir);

    const Tensor* find(std::string_view name) const;
    const std::vector<WeightFile>& files() const { return files_; }
    const std::vector<Frame>& frames() const { return frames_; }  // one per file, tensors in data order
    // Every tensor, by name.
    const std::map<std::string, Tensor, std::less<>>& tensors() const { return tensors_; }

private:
    std::vector<WeightFile> files_;
    std::vector<Frame> frames_;
    std::map<std::string, Tensor, std::less<>> tensors_;
};

// The shard files a model.safetensors.index.json names in its weight_map,
// sorted, each once: plain file names in the model directory. Throws
// heads::Error "WHERE: ..." for bad JSON, no weight_map, no shard, or a name
// that is not a file of the directory ("", ".", "..", a '/' or a NUL).
std::vector<std::string> parse_weight_index(std::string_view json, const std::string& where);

// 16 hex digits: FNV-1a (64-bit) over config.json's bytes, then for each
// weight file (in the order of files()) its JSON header and, for each tensor
// in header order, up to 64 bytes at its start, middle and end. Cheap at load
// (a few pages per tensor) and different for any other architecture, shape,
// dtype or training run.
std::string model_fingerprint(std::string_view config_json, const WeightFiles& weights);
// The same from a directory, without binding the weights to a model.
std::string model_fingerprint(const std::filesystem::path& model_dir);

}  // namespace heads
