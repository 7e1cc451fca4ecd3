#pragma once
// SwiGLU, and softmax, log-softmax and argmax over one row (the logits of a
// step: sampling, decoding and perplexity all read them through these).

#include <cstdint>
#include <span>

namespace heads {

// y[r, i] = silu(gate_up[r, i]) · gate_up[r, d_ff + i]; gate_up [rows, 2·d_ff], y [rows, d_ff].
void swiglu(float* y, const float* gate_up, std::int64_t rows, std::int64_t d_ff);

// probs = softmax(logits); -inf logits (tokens a sampling step removed) get
// probability 0. Sums in double. Throws heads::Error "every token was removed
// from the distribution" for a row of -inf only. `probs` may be `logits`.
void softmax(std::span<float> probs, std::span<const float> logits);
// out = log_softmax(logits) in double; -inf stays -inf; the same error for a
// row of -inf only. `out` may be `logits`.
void log_softmax(std::span<float> out, std::span<const float> logits);
// The index of the largest value; ties go to the lowest index (as llama.cpp
// and numpy's argmax do).
std::int32_t argmax(std::span<const float> values);

}  // namespace heads
