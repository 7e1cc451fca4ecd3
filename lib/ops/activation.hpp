#pragma once
// SwiGLU and softmax, row by row.

#include <cstdint>

namespace heads {

// y[r, i] = silu(gate_up[r, i]) · gate_up[r, d_ff + i]; gate_up [rows, 2·d_ff], y [rows, d_ff].
void swiglu(float* y, const float* gate_up, std::int64_t rows, std::int64_t d_ff);

// In place over one row of n values: softmax, or log-softmax (computed in double).
void softmax(float* row, std::int64_t n);
void log_softmax(float* row, std::int64_t n);

}  // namespace heads
