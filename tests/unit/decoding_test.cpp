#include <doctest/doctest.h>

#include <cmath>
#include <limits>
#include <vector>

#include "decoding/beam.hpp"
#include "decoding/logprobs.hpp"
#include "decoding/ngram.hpp"
#include "decoding/token_tree.hpp"
#include "tensor/error.hpp"

using namespace heads;
using namespace heads::decoding;

namespace {
using Ids = std::vector<std::int32_t>;
constexpr float kInf = std::numeric_limits<float>::infinity();
}  // namespace

TEST_CASE("token tree: shared prefixes, positions and the ancestor mask") {
    TokenTree tree;
    tree.reset(7);
    const auto a = tree.add_path(0, Ids{1, 2, 3});
    const auto b = tree.add_path(0, Ids{1, 4});
    const auto helper = tree.add(0, 9, false);
    CHECK(a == Ids{1, 2, 3});
    CHECK(b == Ids{1, 4});  // shares node 1
    CHECK(helper == 5);
    CHECK(tree.size() == 6);
    CHECK(tree.candidate_count() == 4);
    CHECK(tree.candidates(0) == Ids{1});  // the helper row is not a candidate
    CHECK(tree.candidates(1) == Ids{2, 4});
    CHECK(tree.max_depth() == 3);
    Ids tokens, positions;
    tree.tokens(tokens);
    tree.positions(10, positions);
    CHECK(tokens == Ids{7, 1, 2, 3, 4, 9});
    CHECK(positions == Ids{10, 11, 12, 13, 12, 11});
    std::vector<std::uint8_t> mask;
    tree.mask(mask);
    const std::vector<std::uint8_t> expected{
        1, 0, 0, 0, 0, 0,  //
        1, 1, 0, 0, 0, 0,  //
        1, 1, 1, 0, 0, 0,  //
        1, 1, 1, 1, 0, 0,  //
        1, 1, 0, 0, 1, 0,  //
        1, 0, 0, 0, 0, 1,  //
    };
    CHECK(mask == expected);
}

TEST_CASE("prompt lookup: the latest earlier occurrence of the longest suffix") {
    //            0  1  2  3  4  5  6  7  8  9
    const Ids ctx{5, 6, 7, 8, 1, 5, 6, 9, 2, 5, 6};
    // "5 6" occurred at 0 and 5: the latest (5) is followed by 9 2 5 6.
    CHECK(prompt_lookup(ctx, 1, 3, 3) == Ids{9, 2, 5});
    CHECK(prompt_lookup(ctx, 1, 3, 10) == Ids{9, 2, 5, 6});
    // A longer match wins over a later shorter one.
    const Ids ctx2{1, 2, 3, 4, 9, 3, 8, 2, 3};
    CHECK(prompt_lookup(ctx2, 1, 2, 2) == Ids{4, 9});  // "2 3" at 1
    CHECK(prompt_lookup(ctx2, 1, 1, 2) == Ids{8, 2});  // "3" latest at 5
    CHECK(prompt_lookup(Ids{1, 2, 3}, 1, 3, 4).empty());
    CHECK(prompt_lookup(Ids{4}, 1, 3, 4).empty());
    CHECK(prompt_lookup(Ids{4, 4}, 1, 3, 4) == Ids{4});
}

TEST_CASE("n-gram pool: newest first, unique, at most G per first token") {
    NgramPool pool(3, 2);
    CHECK(pool.add(1, Ids{2, 3}));
    CHECK_FALSE(pool.add(1, Ids{2, 3}));
    CHECK(pool.add(1, Ids{4, 5}));
    CHECK(pool.add(1, Ids{6, 7}));  // pushes {2, 3} out
    CHECK(pool.size() == 2);
    const auto found = pool.find(1);
    REQUIRE(found.size() == 2);
    CHECK(Ids(found[0].begin(), found[0].end()) == Ids{6, 7});
    CHECK(Ids(found[1].begin(), found[1].end()) == Ids{4, 5});
    CHECK(pool.find(2).empty());
}

namespace {
// log-probabilities of a 4-token vocabulary, as one row.
std::vector<float> row(std::vector<double> p) {
    std::vector<float> out;
    for (const double v : p) out.push_back(v > 0 ? float(std::log(v)) : -kInf);
    return out;
}
}  // namespace

TEST_CASE("beam search: keeps the most likely sequences, not the greedy path") {
    // Greedy takes token 0 (0.5) then at best 0.4: 0.2. Token 1 (0.4) is
    // followed by 0.9: 0.36. Two beams find it.
    BeamParams params;
    params.beams = 2;
    params.eos = 3;
    BeamSearch search(params);
    const auto first = row({0.5, 0.4, 0.1, 0.0});
    std::vector<std::span<const float>> rows{first};
    CHECK(search.step(rows) == std::vector<int>{0, 0});
    REQUIRE(search.beams().size() == 2);
    CHECK(search.beams()[0].tokens == Ids{0});
    CHECK(search.beams()[1].tokens == Ids{1});
    const auto after0 = row({0.4, 0.3, 0.3, 0.0});
    const auto after1 = row({0.05, 0.05, 0.9, 0.0});
    rows = {after0, after1};
    CHECK(search.step(rows) == std::vector<int>{1, 0});
    CHECK(search.beams()[0].tokens == Ids{1, 2});
    const auto hyps = search.finish();
    REQUIRE(hyps.size() == 1);
    CHECK(hyps[0].tokens == Ids{1, 2});
    CHECK(hyps[0].logprob == doctest::Approx(std::log(0.36)));
}

TEST_CASE("beam search: EOS finishes hypotheses; early stopping; n-best") {
    BeamParams params;
    params.beams = 2;
    params.eos = 3;
    params.n_best = 2;
    params.early_stopping = true;
    BeamSearch search(params);
    const auto first = row({0.3, 0.2, 0.1, 0.4});  // EOS is the best first token
    std::vector<std::span<const float>> rows{first};
    search.step(rows);
    CHECK_FALSE(search.done());
    REQUIRE(search.beams().size() == 2);  // 0 and 1 live on
    const auto ends = row({0.1, 0.1, 0.1, 0.7});
    rows = {ends, ends};
    search.step(rows);
    CHECK(search.done());  // 2 finished hypotheses with early stopping
    const auto hyps = search.finish();
    REQUIRE(hyps.size() == 2);
    // Scores are logprob / length: EOS alone log(0.4)/1 = -0.92 vs 0 EOS log(0.21)/2 = -0.78.
    CHECK(hyps[0].tokens == Ids{0});
    CHECK(hyps[0].ended);
    CHECK(hyps[1].tokens.empty());
    CHECK(hyps[1].score == doctest::Approx(std::log(0.4)));
    CHECK_THROWS_AS(BeamSearch(BeamParams{.beams = 2, .n_best = 3}), UsageError);
}

TEST_CASE("beam search: one beam is greedy") {
    BeamSearch search(BeamParams{});
    const auto a = row({0.2, 0.5, 0.3, 0.0});
    const auto b = row({0.6, 0.1, 0.3, 0.0});
    std::vector<std::span<const float>> rows{a};
    search.step(rows);
    rows = {b};
    search.step(rows);
    CHECK(search.finish()[0].tokens == Ids{1, 0});
}

TEST_CASE("logprobs: chosen value and the k best, ties to the lower id") {
    std::vector<float> scratch;
    const std::vector<float> logits{1, 3, 3, 0};
    const auto lp = make_logprobs(logits, 0, 2, scratch);
    const double z = std::log(std::exp(1.0) + 2 * std::exp(3.0) + 1);
    CHECK(lp.chosen == doctest::Approx(1 - z));
    REQUIRE(lp.top.size() == 2);
    CHECK(lp.top[0].first == 1);
    CHECK(lp.top[1].first == 2);
    CHECK(lp.top[0].second == doctest::Approx(3 - z));
}
