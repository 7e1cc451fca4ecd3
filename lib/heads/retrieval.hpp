#pragma once
// Wu et al.'s retrieval score (METHODS.md (b)) on copy prompts built from the
// calibration tokens. Each prompt is BOS, a stretch of calibration text with a
// needle inside it (distinct pieces of the calibration text in a random
// order, those the stretch does not hold first, at a random place), then the
// needle's first pieces as the cue; the
// model continues it greedily for as many steps as the needle has pieces left.
// At each step a head scores a hit when the key it attends to most lies in the
// needle and holds the token just generated: it is where the copy came from.
// A head's score is its hits over the pieces the copy writes, averaged over
// the prompts, so it lies in [0, 1]. The prompts depend only on the tokens and
// the seed.

#include <cstdint>
#include <span>
#include <vector>

#include "model/session.hpp"

namespace heads {

struct RetrievalOptions {
    std::uint64_t seed = 0;
    std::int64_t prompts = 16;  // copy prompts, averaged over
    std::int64_t text = 100;    // calibration tokens around the needle (fewer when the input is shorter)
    std::int64_t needle = 20;   // distinct pieces in the needle
    std::int64_t cue = 2;       // the needle's first pieces, repeated after the text
};

struct RetrievalResult {
    std::vector<std::vector<double>> score;  // [n_layers][n_heads_l] mean hits per piece copied
    std::int64_t prompts = 0, steps = 0;     // prompts run, greedy steps in all
    std::int64_t text = 0;                   // calibration tokens around each needle
    std::int64_t copied = 0;                 // steps whose token was the needle's next piece
};

// Runs the copy prompts from an empty cache each (the session's head mask
// applies). Throws heads::Error when the calibration tokens hold fewer than
// options.needle distinct pieces (BOS and EOS aside) or a prompt would not
// fit the model's context.
RetrievalResult retrieval_scores(Session& session, std::span<const std::int32_t> tokens,
                                 const RetrievalOptions& options);

}  // namespace heads
