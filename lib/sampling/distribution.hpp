#pragma once
// Distributions over the vocabulary, dense: one float per token id. A token
// that a step removed has logit -inf and probability 0.

#include <cstdint>
#include <span>

namespace heads::sampling {

// probs = softmax(logits); -inf logits get 0. Sums in double.
void softmax(std::span<float> probs, std::span<const float> logits);
// out = log_softmax(logits); -inf stays -inf.
void log_softmax(std::span<float> out, std::span<const float> logits);
// The index of the largest value; ties go to the lowest index (as llama.cpp
// and numpy's argmax do).
std::int32_t argmax(std::span<const float> values);
// The index i drawn with probability weights[i] / sum(weights), for u uniform
// in [0, 1): the first i whose running sum exceeds u * sum. Weights need not
// be normalized; a zero weight is never drawn.
std::int32_t draw(std::span<const float> weights, double u);
// Shannon entropy in nats of a normalized distribution.
double entropy(std::span<const float> probs);

}  // namespace heads::sampling
