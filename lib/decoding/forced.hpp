#pragma once
// A given continuation scored the way decode would meet it: the prompt
// primed exactly as decode primes it (prime_session: the KV policy acts
// while the prompt runs), then one token per forward pass, the policy
// acting after every step, as when decode generates. Instead of choosing
// the next token, the continuation's own token runs: so each row says how
// likely a compressed cache found the text that really follows (infer --ppl
// --kv-policy).

#include <cstdint>
#include <span>
#include <vector>

#include "decoding/context_guard.hpp"
#include "model/session.hpp"

namespace heads::decoding {

// Starts a new sequence in `session`; `logits` becomes
// [continuation.size(), vocab_size]: row i is the next-token logits after
// prompt and continuation[0, i), the distribution continuation[i] is drawn
// from. prompt: at least one token.
void forced_logits(Session& session, const ContextGuard& guard, std::span<const std::int32_t> prompt,
                   std::span<const std::int32_t> continuation, std::vector<float>& logits);

}  // namespace heads::decoding
