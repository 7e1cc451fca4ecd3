#pragma once
// What a user asks of the sampler (decode's options), before it becomes a chain.

#include <cstdint>
#include <utility>
#include <vector>

namespace heads::sampling {

struct SamplingParams {
    float temperature = 0;        // 0: greedy (argmax)
    int top_k = 0;                // 0: off
    float top_p = 1;              // 1: off
    float min_p = 0;              // 0: off
    float typical_p = 1;          // 1: off
    float repeat_penalty = 1;     // 1: off (CTRL: divide positive logits, multiply negative)
    float presence_penalty = 0;   // 0: off (subtract once per token present)
    float frequency_penalty = 0;  // 0: off (subtract per occurrence)
    int penalty_last_n = 64;      // tokens of context the three penalties look at; -1: all
    int no_repeat_ngram = 0;      // 0: off; n: never complete an n-gram already in the context
    std::vector<std::pair<std::int32_t, float>> logit_bias;  // (token, added to its logit; -inf bans it)
};

}  // namespace heads::sampling

#include <string_view>

namespace heads::sampling {

// --logit-bias: "ID=BIAS", or llama.cpp's "ID+BIAS" / "ID-BIAS"; BIAS a
// number or -inf (ban). Throws heads::UsageError.
std::pair<std::int32_t, float> parse_logit_bias(std::string_view spec);

}  // namespace heads::sampling
