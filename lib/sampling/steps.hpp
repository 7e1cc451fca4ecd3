#pragma once
// The steps of a sampling chain, each a small class that changes the logits
// of one position in place. A removed token gets logit -inf. Sampler
// (chain.hpp) runs them in the order documented there.

#include <cstdint>
#include <span>
#include <string>
#include <utility>
#include <vector>

namespace heads::sampling {

// Reusable memory of a chain (no allocation per token once warm).
struct Scratch {
    std::vector<std::int32_t> order;  // token ids being sorted
    std::vector<float> probs;         // [vocab_size]
    std::vector<std::uint32_t> counts;
};

class Step {
public:
    virtual ~Step() = default;
    // `history`: every token before this position (prompt, then generated).
    virtual void apply(std::span<float> logits, std::span<const std::int32_t> history, Scratch& scratch) const = 0;
    // How -v names it: "top-k(40)".
    virtual std::string describe() const = 0;
};

// Adds a fixed bias to chosen tokens (-inf bans a token).
class LogitBias final : public Step {
public:
    explicit LogitBias(std::vector<std::pair<std::int32_t, float>> bias) : bias_(std::move(bias)) {}
    void apply(std::span<float> logits, std::span<const std::int32_t> history, Scratch& scratch) const override;
    std::string describe() const override;

private:
    std::vector<std::pair<std::int32_t, float>> bias_;
};

// Over the last `last_n` tokens of the history (-1: all): the repetition
// penalty of CTRL (Keskar et al.; a logit l of a present token becomes l/r if
// l > 0, else l*r), then the presence and frequency penalties of the OpenAI
// API (l -= presence + count * frequency), as llama.cpp applies them.
class Penalties final : public Step {
public:
    Penalties(int last_n, float repeat, float presence, float frequency)
        : last_n_(last_n), repeat_(repeat), presence_(presence), frequency_(frequency) {}
    void apply(std::span<float> logits, std::span<const std::int32_t> history, Scratch& scratch) const override;
    std::string describe() const override;

private:
    int last_n_;
    float repeat_, presence_, frequency_;
};

// Bans every token that would complete an n-gram already in the history
// (transformers' no_repeat_ngram_size).
class NoRepeatNgram final : public Step {
public:
    explicit NoRepeatNgram(int n) : n_(n) {}
    void apply(std::span<float> logits, std::span<const std::int32_t> history, Scratch& scratch) const override;
    std::string describe() const override;

private:
    int n_;
};

// Divides the logits by T > 0.
class Temperature final : public Step {
public:
    explicit Temperature(float t) : t_(t) {}
    void apply(std::span<float> logits, std::span<const std::int32_t> history, Scratch& scratch) const override;
    std::string describe() const override;

private:
    float t_;
};

// Keeps the k most likely tokens (ties to the lowest id).
class TopK final : public Step {
public:
    explicit TopK(int k) : k_(k) {}
    void apply(std::span<float> logits, std::span<const std::int32_t> history, Scratch& scratch) const override;
    std::string describe() const override;

private:
    int k_;
};

// Nucleus (Holtzman et al.): keeps the most likely tokens until their mass
// reaches p, the token that crosses p included; at least one token.
class TopP final : public Step {
public:
    explicit TopP(float p) : p_(p) {}
    void apply(std::span<float> logits, std::span<const std::int32_t> history, Scratch& scratch) const override;
    std::string describe() const override;

private:
    float p_;
};

// Keeps the tokens whose probability is at least p times the largest one.
class MinP final : public Step {
public:
    explicit MinP(float p) : p_(p) {}
    void apply(std::span<float> logits, std::span<const std::int32_t> history, Scratch& scratch) const override;
    std::string describe() const override;

private:
    float p_;
};

// Locally typical sampling (Meister et al.): ranks tokens by how far their
// surprisal is from the entropy, and keeps the closest ones until their mass
// reaches p (the one that crosses p included).
class TypicalP final : public Step {
public:
    explicit TypicalP(float p) : p_(p) {}
    void apply(std::span<float> logits, std::span<const std::int32_t> history, Scratch& scratch) const override;
    std::string describe() const override;

private:
    float p_;
};

}  // namespace heads::sampling
