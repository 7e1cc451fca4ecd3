#include "sampling/chain.hpp"

#include <cmath>

#include "sampling/distribution.hpp"
#include "tensor/error.hpp"

namespace heads::sampling {
namespace {

void check(const SamplingParams& p) {
    if (!(p.temperature >= 0) || !std::isfinite(p.temperature))
        throw UsageError(Param{"temperature"}, "the temperature must be a number >= 0, not {}", p.temperature);
    if (p.top_k < 0) throw UsageError(Param{"top_k"}, "top-k must be >= 0, not {}", p.top_k);
    if (!(p.top_p > 0 && p.top_p <= 1)) throw UsageError(Param{"top_p"}, "top-p must be in (0, 1], not {}", p.top_p);
    if (!(p.min_p >= 0 && p.min_p <= 1)) throw UsageError(Param{"min_p"}, "min-p must be in [0, 1], not {}", p.min_p);
    if (!(p.typical_p > 0 && p.typical_p <= 1))
        throw UsageError(Param{"typical_p"}, "typical-p must be in (0, 1], not {}", p.typical_p);
    if (!(p.repeat_penalty > 0) || !std::isfinite(p.repeat_penalty))
        throw UsageError(Param{"repeat_penalty"}, "the repeat penalty must be a number > 0, not {}", p.repeat_penalty);
    if (!std::isfinite(p.presence_penalty) || !std::isfinite(p.frequency_penalty))
        throw UsageError(Param{"presence_and_frequency_penalty"},
                         "the presence and frequency penalties must be finite "
                         "numbers, not {} and {}",
                         p.presence_penalty, p.frequency_penalty);
    if (p.penalty_last_n < -1)
        throw UsageError(Param{"penalty_last_n"}, "the penalty window must be >= -1 tokens, not {}", p.penalty_last_n);
    if (p.no_repeat_ngram < 0)
        throw UsageError(Param{"no_repeat_ngram"}, "the no-repeat n-gram size must be >= 0, not {}", p.no_repeat_ngram);
    for (const auto& [token, bias] : p.logit_bias)
        if (token < 0 || std::isnan(bias) || bias == INFINITY)
            throw UsageError(Param{"logit_bias"}, "bad logit bias {}={}", token, bias);
}

}  // namespace

Sampler::Sampler(const SamplingParams& p) : greedy_(p.temperature == 0) {
    check(p);
    if (!p.logit_bias.empty()) steps_.push_back(std::make_unique<LogitBias>(p.logit_bias));
    if (p.penalty_last_n != 0 && (p.repeat_penalty != 1 || p.presence_penalty != 0 || p.frequency_penalty != 0))
        steps_.push_back(
            std::make_unique<Penalties>(p.penalty_last_n, p.repeat_penalty, p.presence_penalty, p.frequency_penalty));
    if (p.no_repeat_ngram > 0) steps_.push_back(std::make_unique<NoRepeatNgram>(p.no_repeat_ngram));
    if (greedy_) return;
    if (p.temperature != 1) steps_.push_back(std::make_unique<Temperature>(p.temperature));
    if (p.top_k > 0) steps_.push_back(std::make_unique<TopK>(p.top_k));
    if (p.top_p < 1) steps_.push_back(std::make_unique<TopP>(p.top_p));
    if (p.min_p > 0) steps_.push_back(std::make_unique<MinP>(p.min_p));
    if (p.typical_p < 1) steps_.push_back(std::make_unique<TypicalP>(p.typical_p));
}

void Sampler::process(std::span<float> logits, std::span<const std::int32_t> history) {
    for (const auto& step : steps_) step->apply(logits, history, scratch_);
}

void Sampler::distribution(std::span<float> probs, std::span<float> logits, std::span<const std::int32_t> history) {
    process(logits, history);
    if (greedy_) {
        std::fill(probs.begin(), probs.end(), 0.0f);
        probs[argmax(logits)] = 1;
    } else {
        softmax(probs, logits);
    }
}

std::int32_t Sampler::sample(std::span<float> logits, std::span<const std::int32_t> history, Rng& rng) {
    process(logits, history);
    if (greedy_) return argmax(logits);
    auto& probs = scratch_.probs;
    probs.resize(logits.size());
    softmax(probs, logits);
    return draw(probs, rng.uniform());
}

std::string Sampler::describe() const {
    std::string out;
    for (const auto& step : steps_) out += step->describe() + " > ";
    return out + (greedy_ ? "argmax" : "draw");
}

}  // namespace heads::sampling
