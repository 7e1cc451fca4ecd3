#include "decoding/generation.hpp"

#include <limits>

namespace heads::decoding {

Generation::Generation(const Limits& limits, TokenSink& sink, std::span<const std::int32_t> prompt, sampling::Rng rng)
    : limits_(limits),
      sink_(sink),
      history_(prompt.begin(), prompt.end()),
      prompt_size_(std::int64_t(prompt.size())),
      rng_(rng) {
    if (limits_.max_tokens == 0) done_ = true;
}

std::int64_t Generation::remaining() const {
    if (done_) return 0;
    if (limits_.max_tokens < 0) return std::numeric_limits<std::int32_t>::max();
    return limits_.max_tokens - generated();
}

bool Generation::emit(std::int32_t token, std::span<const float> logits) {
    if (sink_.logprobs_k() > 0 && !(token == limits_.eos && !limits_.ignore_eos)) {
        const Logprobs record = make_logprobs(logits, token, sink_.logprobs_k(), scratch_);
        return emit(token, &record);
    }
    return emit(token, nullptr);
}

bool Generation::emit(std::int32_t token, const Logprobs* logprobs) {
    if (done_) return false;
    if (token == limits_.eos && !limits_.ignore_eos) {
        done_ = true;
        return false;
    }
    history_.push_back(token);
    if (!sink_.push(token, logprobs) || remaining() <= 0) done_ = true;
    return !done_;
}

void Generation::end() {
    sink_.end();
    ended_ = true;
}

}  // namespace heads::decoding
