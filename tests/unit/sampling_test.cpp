#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <map>
#include <numeric>
#include <vector>

#include "sampling/chain.hpp"
#include "sampling/distribution.hpp"
#include "sampling/params.hpp"
#include "sampling/rng.hpp"
#include "sampling/speculative.hpp"
#include "sampling/steps.hpp"
#include "tensor/error.hpp"

using namespace heads;
using namespace heads::sampling;

namespace {

constexpr float kInf = std::numeric_limits<float>::infinity();

std::vector<float> run_step(const Step& step, std::vector<float> logits, std::vector<std::int32_t> history = {}) {
    Scratch scratch;
    step.apply(logits, history, scratch);
    return logits;
}

std::vector<int> kept(const std::vector<float>& logits) {
    std::vector<int> ids;
    for (std::size_t i = 0; i < logits.size(); ++i)
        if (logits[i] != -kInf) ids.push_back(int(i));
    return ids;
}

std::vector<float> logits_of(std::vector<double> probs) {
    std::vector<float> logits;
    for (const double p : probs) logits.push_back(float(std::log(p)));
    return logits;
}

// The 0.999 quantile of chi-square with df degrees of freedom (Wilson-Hilferty).
double critical_999(int df) {
    const double z = 3.0902, a = 2.0 / (9.0 * df);
    return df * std::pow(1 - a + z * std::sqrt(a), 3);
}

// Pearson's test of `counts` against `expected` probabilities at the 0.001
// level: true when the counts fit. A count where the expectation is 0 fails.
bool fits(const std::vector<int>& counts, const std::vector<double>& expected, int draws) {
    double stat = 0;
    int df = -1;
    for (std::size_t i = 0; i < counts.size(); ++i) {
        const double e = expected[i] * draws;
        if (e == 0) {
            if (counts[i] != 0) return false;
            continue;
        }
        ++df;
        stat += (counts[i] - e) * (counts[i] - e) / e;
    }
    MESSAGE("chi-square " << stat << " with " << df << " degrees of freedom; 0.999 critical " << critical_999(df));
    REQUIRE(df >= 3);
    return stat < critical_999(df);
}

}  // namespace

TEST_CASE("rng: a (seed, stream) pair always gives the same numbers, and others differ") {
    Rng a(42, 7), b(42, 7), c(42, 8), d(43, 7);
    std::vector<std::uint64_t> xs, ys;
    for (int i = 0; i < 4; ++i) xs.push_back(a.next()), ys.push_back(b.next());
    CHECK(xs == ys);
    CHECK(c.next() != Rng(42, 7).next());
    CHECK(d.next() != Rng(42, 7).next());
    // Pinned: the numbers are part of the output contract (same seed, same
    // text, on every machine and in every version).
    CHECK(Rng(0, 0).next() == 18110106563157542208ULL);
    CHECK(Rng(42, 7).next() == 2648032583866158101ULL);
    double sum = 0;
    for (int i = 0; i < 10000; ++i) {
        const double u = a.uniform();
        REQUIRE(u >= 0);
        REQUIRE(u < 1);
        sum += u;
    }
    CHECK(sum / 10000 == doctest::Approx(0.5).epsilon(0.02));
}

TEST_CASE("distribution: draw and entropy (softmax, log-softmax and argmax are tested with ops)") {
    const std::vector<float> weights{0, 2, 0, 6};
    CHECK(draw(weights, 0.0) == 1);
    CHECK(draw(weights, 0.24) == 1);
    CHECK(draw(weights, 0.26) == 3);
    CHECK(draw(weights, 0.999999) == 3);
    CHECK(entropy(std::vector<float>{0.5f, 0.5f}) == doctest::Approx(std::log(2.0)));
}

TEST_CASE("steps: logit bias and temperature") {
    CHECK(run_step(LogitBias({{1, 2.5f}, {2, -kInf}}), {1, 1, 1}) == std::vector<float>{1, 3.5f, -kInf});
    CHECK(run_step(Temperature(0.5f), {1, -2, -kInf}) == std::vector<float>{2, -4, -kInf});
}

TEST_CASE("steps: penalties count the last n tokens of the history") {
    // token 0 once, token 1 twice; token 2 absent.
    const std::vector<float> logits{2, -2, 1, 0.5f};
    const auto out = run_step(Penalties(-1, 2, 0.5f, 0.25f), logits, {1, 0, 1});
    CHECK(out[0] == doctest::Approx(2.0 / 2 - 0.5 - 0.25));
    CHECK(out[1] == doctest::Approx(-2.0 * 2 - 0.5 - 2 * 0.25));
    CHECK(out[2] == 1);
    CHECK(out[3] == 0.5f);
    // Only the last token (1) counts with last_n = 1.
    const auto last = run_step(Penalties(1, 2, 0, 0), logits, {1, 0, 1});
    CHECK(last[0] == 2);
    CHECK(last[1] == -4);
    // The same Scratch twice: counts are reset between calls.
    Scratch scratch;
    std::vector<float> a = logits, b = logits;
    Penalties step(-1, 1, 0, 1);
    step.apply(a, std::vector<std::int32_t>{3, 3}, scratch);
    step.apply(b, std::vector<std::int32_t>{3}, scratch);
    CHECK(a[3] == doctest::Approx(0.5 - 2));
    CHECK(b[3] == doctest::Approx(0.5 - 1));
}

TEST_CASE("steps: no-repeat-ngram bans what would complete a seen n-gram") {
    const std::vector<float> flat(10, 0.0f);
    CHECK(kept(run_step(NoRepeatNgram(3), flat, {5, 6, 7, 5, 6})) == std::vector<int>{0, 1, 2, 3, 4, 5, 6, 8, 9});
    CHECK(kept(run_step(NoRepeatNgram(2), flat, {5, 6, 7, 6})) == std::vector<int>{0, 1, 2, 3, 4, 5, 6, 8, 9});
    CHECK(kept(run_step(NoRepeatNgram(1), flat, {1, 3})) == std::vector<int>{0, 2, 4, 5, 6, 7, 8, 9});
    CHECK(kept(run_step(NoRepeatNgram(3), flat, {5})) == kept(flat));  // too short to repeat anything
}

TEST_CASE("steps: top-k keeps the k largest, ties to the lowest id") {
    CHECK(kept(run_step(TopK(2), {1, 3, 3, 2})) == std::vector<int>{1, 2});
    CHECK(kept(run_step(TopK(1), {1, 3, 3, 2})) == std::vector<int>{1});
    CHECK(kept(run_step(TopK(3), {1, 3, -kInf, 2})) == std::vector<int>{0, 1, 3});
    CHECK(kept(run_step(TopK(9), {1, 3, 3, 2})) == std::vector<int>{0, 1, 2, 3});
}

TEST_CASE("steps: top-p keeps the smallest head reaching p, the crossing token included") {
    const auto logits = logits_of({0.15, 0.5, 0.05, 0.3});
    CHECK(kept(run_step(TopP(0.4f), logits)) == std::vector<int>{1});
    CHECK(kept(run_step(TopP(0.75f), logits)) == std::vector<int>{1, 3});
    CHECK(kept(run_step(TopP(0.81f), logits)) == std::vector<int>{0, 1, 3});
    CHECK(kept(run_step(TopP(1e-6f), logits)) == std::vector<int>{1});
}

TEST_CASE("steps: min-p keeps tokens at least p times as likely as the best") {
    const auto logits = logits_of({0.15, 0.5, 0.05, 0.3});
    CHECK(kept(run_step(MinP(0.5f), logits)) == std::vector<int>{1, 3});
    CHECK(kept(run_step(MinP(0.25f), logits)) == std::vector<int>{0, 1, 3});
    CHECK(kept(run_step(MinP(1.0f), logits)) == std::vector<int>{1});
}

TEST_CASE("steps: typical-p ranks by |surprisal - entropy|") {
    const std::vector<double> p{0.4, 0.3, 0.2, 0.1};
    double h = 0;
    for (const double v : p) h -= v * std::log(v);
    // Rank by distance, by hand.
    std::vector<int> rank{0, 1, 2, 3};
    std::sort(rank.begin(), rank.end(),
              [&](int a, int b) { return std::abs(-std::log(p[a]) - h) < std::abs(-std::log(p[b]) - h); });
    REQUIRE(rank[0] == 1);  // -log 0.3 = 1.20 is closest to h = 1.28
    std::vector<int> first_two{rank[0], rank[1]};
    std::sort(first_two.begin(), first_two.end());
    CHECK(kept(run_step(TypicalP(0.25f), logits_of(p))) == std::vector<int>{rank[0]});
    CHECK(kept(run_step(TypicalP(0.35f), logits_of(p))) == first_two);
}

TEST_CASE("chain: documented order, greedy ignores the shaping steps") {
    SamplingParams params;
    params.temperature = 0.7f;
    params.top_k = 40;
    params.top_p = 0.9f;
    params.min_p = 0.05f;
    params.typical_p = 0.95f;
    params.repeat_penalty = 1.1f;
    params.no_repeat_ngram = 3;
    params.logit_bias = {{1, 1.0f}};
    CHECK(Sampler(params).describe() ==
          "logit-bias(1 tokens) > penalties(repeat 1.1, presence 0, frequency 0, last 64) > no-repeat-ngram(3) > "
          "temperature(0.7) > top-k(40) > top-p(0.9) > min-p(0.05) > typical-p(0.95) > draw");
    params.temperature = 0;
    CHECK(
        Sampler(params).describe() ==
        "logit-bias(1 tokens) > penalties(repeat 1.1, presence 0, frequency 0, last 64) > no-repeat-ngram(3) > argmax");
    // Greedy with a penalty: the repeated best token loses to the next one.
    SamplingParams penalized;
    penalized.repeat_penalty = 1.1f;
    Sampler greedy(penalized);
    std::vector<float> logits{1.0f, 1.05f, 0.5f};
    Rng rng;
    CHECK(greedy.sample(logits, std::vector<std::int32_t>{1}, rng) == 0);
    CHECK(Sampler(SamplingParams{}).describe() == "argmax");
}

TEST_CASE("chain: bad parameters are usage errors") {
    SamplingParams p;
    p.top_p = 0;
    CHECK_THROWS_AS(Sampler{p}, UsageError);
    p = {};
    p.temperature = -1;
    CHECK_THROWS_AS(Sampler{p}, UsageError);
    p = {};
    p.min_p = 2;
    CHECK_THROWS_AS(Sampler{p}, UsageError);
    p = {};
    p.repeat_penalty = 0;
    CHECK_THROWS_AS(Sampler{p}, UsageError);
}

TEST_CASE("chain: first tokens drawn over many seeds follow the processed distribution (chi-square)") {
    const std::vector<float> raw{1.2f, 0.3f, 2.0f, -0.5f, 1.9f, 0.8f, 0.0f, 1.5f, -1.0f, 0.6f, 1.0f, 0.2f};
    const std::vector<std::int32_t> history{2, 7, 2};
    SamplingParams params;
    params.temperature = 0.8f;
    params.top_k = 9;
    params.top_p = 0.97f;
    params.repeat_penalty = 1.3f;

    // The expected distribution, computed here step by step in double.
    std::vector<double> l(raw.begin(), raw.end());
    for (const int t : {2, 7}) l[t] = l[t] > 0 ? l[t] / 1.3 : l[t] * 1.3;
    for (auto& v : l) v /= 0.8;
    std::vector<int> order(l.size());
    std::iota(order.begin(), order.end(), 0);
    std::sort(order.begin(), order.end(), [&](int a, int b) { return l[a] > l[b]; });
    order.resize(9);  // top-k
    const auto normalized = [&](const std::vector<int>& ids) {
        std::vector<double> p(l.size(), 0.0);
        double z = 0;
        for (const int i : ids) z += std::exp(l[i]);
        for (const int i : ids) p[i] = std::exp(l[i]) / z;
        return p;
    };
    std::vector<double> p = normalized(order);
    double mass = 0;
    std::size_t keep = 0;
    while (mass < 0.97) mass += p[order[keep++]];
    order.resize(keep);  // top-p
    const std::vector<double> expected = normalized(order);

    const int draws = 20000;
    std::vector<int> counts(raw.size(), 0);
    Sampler sampler(params);
    for (int i = 0; i < draws; ++i) {
        Rng rng(1234, std::uint64_t(i));  // one sequence per draw, as decode seeds each prompt line
        std::vector<float> logits = raw;
        ++counts[sampler.sample(logits, history, rng)];
    }
    CHECK(fits(counts, expected, draws));

    // The test has power: the same draws against the distribution without
    // the repetition penalty fail it.
    for (const int t : {2, 7}) l[t] = raw[t] / 0.8;
    CHECK_FALSE(fits(counts, normalized(order), draws));
}

TEST_CASE("speculative: greedy acceptance is argmax equality and draws nothing") {
    std::vector<float> p{0, 0, 1, 0};
    const std::vector<float> q{0, 1, 0, 0};
    Rng rng(5), untouched(5);
    CHECK(accept_draft(p, q, 2, rng));
    CHECK_FALSE(accept_draft(p, q, 1, rng));
    CHECK(p == std::vector<float>{0, 0, 1, 0});  // residual: the argmax
    CHECK_FALSE(accept_draft(p, {}, 3, rng));
    CHECK(draw(p, 0.5) == 2);
    CHECK(rng.next() == untouched.next());
}

TEST_CASE("speculative: the output of a draft-then-verify step is distributed as p (chi-square)") {
    const std::vector<float> target{0.1f, 0.4f, 0.05f, 0.25f, 0.2f};
    const std::vector<float> draft{0.3f, 0.1f, 0.3f, 0.2f, 0.1f};
    const std::vector<double> expected(target.begin(), target.end());
    const int draws = 40000;
    std::vector<int> from_draft(5, 0), from_candidates(5, 0);
    for (int i = 0; i < draws; ++i) {
        Rng rng(99, std::uint64_t(i));
        // A model draft: x ~ q, then the rule.
        std::vector<float> p = target;
        const auto x = draw(draft, rng.uniform());
        ++from_draft[accept_draft(p, draft, x, rng) ? x : draw(p, rng.uniform())];
        // Two deterministic candidates tried in turn, then the residual.
        p = target;
        std::int32_t chosen = -1;
        for (const std::int32_t candidate : {3, 1})
            if (accept_draft(p, {}, candidate, rng)) {
                chosen = candidate;
                break;
            }
        ++from_candidates[chosen >= 0 ? chosen : draw(p, rng.uniform())];
    }
    CHECK(fits(from_draft, expected, draws));
    CHECK(fits(from_candidates, expected, draws));
    // Power: the draft's own distribution is rejected.
    const std::vector<double> wrong(draft.begin(), draft.end());
    CHECK_FALSE(fits(from_draft, wrong, draws));
}

TEST_CASE("params: --logit-bias spellings") {
    CHECK(parse_logit_bias("15=2.5") == std::pair<std::int32_t, float>{15, 2.5f});
    CHECK(parse_logit_bias("15+1") == std::pair<std::int32_t, float>{15, 1.0f});
    CHECK(parse_logit_bias("15-1.5") == std::pair<std::int32_t, float>{15, -1.5f});
    CHECK(parse_logit_bias("2-inf").second == -kInf);
    CHECK(parse_logit_bias("2=-inf").second == -kInf);
    for (const char* bad : {"", "=1", "x=1", "1=", "1=abc", "1=inf", "-1=2", "1=2x", "1=nan"})
        CHECK_THROWS_AS(parse_logit_bias(bad), UsageError);
}
