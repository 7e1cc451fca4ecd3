#pragma once
// Weight matrices the engine had to make (repacked into oneDNN's layout, or
// rows converted to another dtype) kept in a file, so a later run maps them
// instead of making them again: a program in a pipe then starts in
// milliseconds and still multiplies in the fastest format.
//
// Where: $HEADS_WEIGHT_CACHE if set (a directory; "off" disables the cache),
// else $XDG_CACHE_HOME/heads, else ~/.cache/heads. One file per model, CPU
// ISA and weight format: FINGERPRINT-ISA-FORMAT.weights. The file starts with
// "HEADSWC1", a header size and a JSON header holding the key (fingerprint,
// each weight file's size and modification time, ISA, oneDNN version,
// weight format) and per matrix its shape, oneDNN layout and byte range; the
// data follows, each matrix page-aligned. A file whose key differs (the model
// changed, another oneDNN) or that fails a check (truncated, bad header,
// wrong shape, sampled bytes that do not match) is ignored and rewritten. So
// is a file whose key matches but whose values are not the model's (made
// from other weights of the same shape whose files have the same fingerprint,
// sizes and times): a few elements of each matrix are compared with the
// weights it is made from (made_from()), so such a file costs a rebuild, not
// wrong logits.
// Files are written under a temporary name and renamed: readers never see
// half a file. Models whose made weights are under 32 MiB are not cached
// (making them takes milliseconds).

#include <cstdint>
#include <filesystem>
#include <optional>
#include <string>
#include <vector>

#include "ops/context.hpp"
#include "ops/matmul.hpp"

namespace heads {

struct CachedMatrixSpec {
    std::string name;  // "layers.3.qkv", "lm_head", ...
    std::int64_t in = 0, out = 0;
    // The weights the matrix is made from, stacked along `out`: each [out_i, in].
    // Empty: the file's values are not compared with any.
    std::vector<Tensor> parts;
};

class WeightCache {
public:
    // `key` identifies what the packed weights were made from; `stem` names the file.
    WeightCache(std::filesystem::path path, std::string key);

    // The cache directory from the environment; nullopt when disabled.
    static std::optional<std::filesystem::path> directory();
    static constexpr std::uint64_t kMinimumBytes = std::uint64_t(32) << 20;

    const std::filesystem::path& path() const { return path_; }

    // The matrices, in `specs` order, mapped from the file; nullopt when the
    // file is absent or made for another key. Every field of the file is
    // checked before it is used (the magic, the header's JSON, each matrix's
    // name, shape, oneDNN layout, byte range and sampled bytes, and its values
    // against the spec's parts): a file that fails a check throws
    // heads::Error "PATH: ...".
    std::optional<std::vector<PackedMatrix>> read(const std::vector<CachedMatrixSpec>& specs, WeightFormat format) const;
    // read() for the engine: a damaged file is a miss too (nullopt), so it is
    // made again and rewritten, as man/infer.1 says.
    std::optional<std::vector<PackedMatrix>> load(const std::vector<CachedMatrixSpec>& specs, WeightFormat format) const;
    // Writes them (atomically). Failure to write is not an error: returns false.
    bool save(const std::vector<CachedMatrixSpec>& specs, const std::vector<PackedMatrix>& matrices) const noexcept;

private:
    std::filesystem::path path_;
    std::string key_;
};

}  // namespace heads
