#pragma once
// The model the weight_cache fuzz target reads a cache for, shared with the
// generator of its seeds (weight_cache_seeds.cpp): two matrices, the first
// several of oneDNN's blocks each way, and one key per weight format.

#include <string>
#include <vector>

#include "model/weight_cache.hpp"

namespace heads::fuzz {

// No weights behind them: the values of a file are not compared with any.
inline const std::vector<CachedMatrixSpec> kWeightCacheSpecs = {{"layers.0.qkv", 48, 72, {}}, {"lm_head", 8, 4, {}}};
inline constexpr WeightFormat kWeightCacheFormats[] = {WeightFormat::onednn_f32, WeightFormat::rows_f32,
                                                       WeightFormat::rows_bf16};
inline std::string weight_cache_key(WeightFormat format) { return std::string("fuzz-") + format_name(format); }

}  // namespace heads::fuzz
