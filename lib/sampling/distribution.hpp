#pragma once
// Distributions over the vocabulary, dense: one float per token id. A token
// that a step removed has logit -inf and probability 0.

#include <cstdint>
#include <span>

#include "ops/activation.hpp"

namespace heads::sampling {

// softmax, log_softmax and argmax are ops/activation.hpp's.
// The index i drawn with probability weights[i] / sum(weights), for u uniform
// in [0, 1): the first i whose running sum exceeds u * sum. Weights need not
// be normalized; a zero weight is never drawn.
std::int32_t draw(std::span<const float> weights, double u);
// Shannon entropy in nats of a normalized distribution.
double entropy(std::span<const float> probs);

}  // namespace heads::sampling
