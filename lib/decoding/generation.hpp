#pragma once
// One generation in progress: the context so far, the sequence's random
// numbers, and where chosen tokens go. Every strategy hands each token to
// emit() the moment it is chosen, and stops when emit() says so: after -n
// tokens, at EOS (not written, unless --ignore-eos makes it an ordinary
// token), or when the sink asks (a --stop string was completed).

#include <cstdint>
#include <span>
#include <vector>

#include "decoding/logprobs.hpp"
#include "sampling/rng.hpp"

namespace heads::decoding {

struct Limits {
    std::int64_t max_tokens = 128;  // -1: until EOS or a stop
    std::int32_t eos = -1;          // -1: none
    bool ignore_eos = false;
};

// Where generated tokens go (decode writes ids or text to stdout).
class TokenSink {
public:
    virtual ~TokenSink() = default;
    // A generated token, with its --logprobs record when logprobs_k() > 0.
    // Returns false to stop generating (a stop string was completed).
    virtual bool push(std::int32_t token, const Logprobs* logprobs) = 0;
    // The end of one output sequence.
    virtual void end() = 0;
    virtual int logprobs_k() const { return 0; }
};

class Generation {
public:
    Generation(const Limits& limits, TokenSink& sink, std::span<const std::int32_t> prompt, sampling::Rng rng);

    // Prompt then generated tokens: the history the sampler's penalties see.
    std::span<const std::int32_t> history() const { return history_; }
    std::int64_t prompt_size() const { return prompt_size_; }
    std::int64_t generated() const { return std::int64_t(history_.size()) - prompt_size_; }
    // Tokens still allowed (a large number without -n).
    std::int64_t remaining() const;
    sampling::Rng& rng() { return rng_; }
    bool done() const { return done_; }
    const Limits& limits() const { return limits_; }
    // For strategies that write whole sequences at the end (beam search).
    TokenSink& sink() { return sink_; }

    // Hands `token` to the sink; `logits` are the step's logits before any
    // sampling step (for --logprobs). Returns false when generation is over.
    bool emit(std::int32_t token, std::span<const float> logits);
    // The same with a ready record (beam search keeps them per beam).
    bool emit(std::int32_t token, const Logprobs* logprobs);
    // Ends an output sequence (beam search may write several).
    void end();
    bool ended() const { return ended_; }

private:
    Limits limits_;
    TokenSink& sink_;
    std::vector<std::int32_t> history_;
    std::int64_t prompt_size_;
    sampling::Rng rng_;
    bool done_ = false;
    bool ended_ = false;
    std::vector<float> scratch_;
};

}  // namespace heads::decoding
