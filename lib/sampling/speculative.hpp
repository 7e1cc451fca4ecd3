#pragma once
// The acceptance rule of speculative sampling (Leviathan et al. 2023, Chen et
// al. 2023), which keeps the output distribution exactly that of the target:
// a token x drafted from q is kept with probability min(1, p(x) / q(x)); when
// it is rejected, the replacement is drawn from norm(max(0, p - q)).
//
// A deterministic draft (prompt lookup, lookahead, an n-gram) is q = one-hot
// at x: x is kept with probability p(x), else the replacement comes from p
// without x. Several deterministic candidates for one position (a tree) are
// tried in turn against what the previous rejections left of p (SpecInfer's
// multi-candidate rule), which is still exact.
//
// Under greedy, p is one-hot at the argmax and every rule reduces to "keep x
// iff it is the argmax, else take the argmax": token for token greedy.

#include <cstdint>
#include <span>

#include "sampling/rng.hpp"

namespace heads::sampling {

// p: the target's distribution at this position (need not be normalized).
// q: the draft's distribution, or empty for a deterministic draft.
// Returns true when x is kept. On rejection, p is replaced by the residual
// (unnormalized) to draw the replacement from (sampling::draw), or to try the
// next candidate against.
bool accept_draft(std::span<float> p, std::span<const float> q, std::int32_t x, Rng& rng);

}  // namespace heads::sampling
