#pragma once
// The `__metadata__` keys and values heads writes into its frames
// (man/heads.7 documents them). Spell them only through these names.

#include <string_view>

namespace heads::keys {

inline constexpr std::string_view kind = "heads.kind";      // one of the kinds below
inline constexpr std::string_view model = "heads.model";    // the model's fingerprint
inline constexpr std::string_view tokens = "heads.tokens";  // ids of the sequence, space-separated
inline constexpr std::string_view policy = "heads.policy";  // kv frames: the compression policy applied
// kv frames with received tensors: how many last queries kv.L.received_recent sums
inline constexpr std::string_view recent_queries = "heads.recent_queries";
inline constexpr std::string_view ctx = "heads.ctx";  // logprobs frames: the window length they were scored with

}  // namespace heads::keys

namespace heads::kinds {

inline constexpr std::string_view logits = "logits";
inline constexpr std::string_view hidden = "hidden";
inline constexpr std::string_view attention = "attention";
inline constexpr std::string_view kv = "kv";
inline constexpr std::string_view logprobs = "logprobs";  // infer --ppl --save-logits

}  // namespace heads::kinds
