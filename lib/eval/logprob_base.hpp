#pragma once
// infer --ppl --kl-base FILE: the log-probabilities an earlier run saved
// (--save-logits), checked against this run before it is compared with them.

#include <cstdint>
#include <span>
#include <string>

#include "safetensors/frame.hpp"

namespace heads {

// The frame's log_probs [predictions, vocab_size] (F32, row by row), after
// checking it is a logprobs frame scored with window `ctx` over the same
// `targets` with a vocabulary of `vocab_size`. Throws heads::Error "WHERE: ...".
const float* check_logprob_base(const Frame& frame, const std::string& where, std::int64_t vocab_size, std::int64_t ctx,
                                std::span<const std::int32_t> targets);

}  // namespace heads
