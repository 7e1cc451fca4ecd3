#pragma once
// --logprobs: per generated token, its log-probability under the model and
// the K most likely tokens at that step, as a TSV (see man decode(1)).

#include <cstdint>
#include <cstdio>
#include <span>
#include <utility>
#include <vector>

#include "io/output.hpp"

namespace heads::decoding {

struct Logprobs {
    float chosen = 0;                                 // log p(token)
    std::vector<std::pair<std::int32_t, float>> top;  // the k best (id, log p), best first
};

// From the logits of one step (before any sampling step): log-softmax, the
// chosen token's value and the k best (ties: lower id first).
Logprobs make_logprobs(std::span<const float> logits, std::int32_t token, int k, std::vector<float>& scratch);

// The TSV: a header line, then per token
//   seq  step  id  logprob  top1_id  top1_logprob ... topK_id  topK_logprob
// seq counts outputs from 0 (a prompt line, or each --n-best line), step
// counts tokens from 0.
class LogprobsWriter {
public:
    LogprobsWriter(Sink out, int k);
    int k() const { return k_; }
    void write(std::int64_t seq, std::int64_t step, std::int32_t token, const Logprobs& lp);

private:
    Sink out_;
    int k_;
};

}  // namespace heads::decoding
