#pragma once
// A sampler is a chain of small steps over the logits of one position,
// always in this order (each step only when its option is set):
//
//   1. logit bias             --logit-bias
//   2. penalties              --repeat-penalty, --presence-penalty, --frequency-penalty
//                             (over --repeat-last-n tokens of the context)
//   3. no-repeat n-gram       --no-repeat-ngram
//   -- greedy (--temp 0) stops here and takes the argmax (ties: lowest id) --
//   4. temperature            --temp
//   5. top-k                  --top-k
//   6. top-p                  --top-p
//   7. min-p                  --min-p
//   8. typical-p              --typical-p
//   9. draw from the softmax of what is left
//
// Steps 1-3 change what the model prefers and act under greedy too; 4-8
// shape the distribution a token is drawn from (transformers' order of
// processors, then warpers). The same chain gives speculative decoding the
// target and draft distributions, so verification sees exactly the
// distribution plain sampling would draw from.

#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "sampling/params.hpp"
#include "sampling/rng.hpp"
#include "sampling/steps.hpp"

namespace heads::sampling {

class Sampler {
public:
    // Throws heads::UsageError for out-of-range parameters.
    explicit Sampler(const SamplingParams& params);

    bool greedy() const { return greedy_; }

    // Runs every step in order on `logits` (in place).
    void process(std::span<float> logits, std::span<const std::int32_t> history);
    // The distribution the next token comes from, after process(): one-hot at
    // the argmax under greedy, else the softmax of the processed logits.
    void distribution(std::span<float> probs, std::span<float> logits, std::span<const std::int32_t> history);
    // The next token: process(), then the argmax or a draw with `rng`.
    std::int32_t sample(std::span<float> logits, std::span<const std::int32_t> history, Rng& rng);

    // "penalties(...) > temperature(0.8) > top-k(40) > draw", for -v.
    std::string describe() const;

private:
    std::vector<std::unique_ptr<Step>> steps_;
    bool greedy_;
    Scratch scratch_;
};

}  // namespace heads::sampling
