#pragma once
// The bookkeeping of beam search (transformers' BeamSearchScorer rules),
// apart from the model: which beams survive a step, which hypotheses are
// finished, when the search is over. The caller runs the model and gives,
// per live beam, the log-probabilities of its next token; the search answers
// with each new beam's parent, so the caller can copy KV caches.
//
// A step ranks the 2 * beams best (beam, token) extensions by the sum of
// log-probabilities (ties: lower beam, then lower token id). In that order an
// EOS extension among the first `beams` finishes a hypothesis; any other
// extension becomes a live beam until there are `beams` of them. A
// hypothesis scores logprob / length^length_penalty (length counts the
// generated tokens, EOS included). The search ends when `beams` hypotheses
// are finished and either early_stopping is set or no live beam can still
// beat the worst of them; at the length limit, live beams join the
// hypotheses.

#include <cstdint>
#include <span>
#include <vector>

#include "decoding/logprobs.hpp"

namespace heads::decoding {

struct BeamParams {
    int beams = 1;
    float length_penalty = 1;
    bool early_stopping = false;
    int n_best = 1;
    std::int32_t eos = -1;  // -1: no token ends a hypothesis
};

struct Hypothesis {
    std::vector<std::int32_t> tokens;  // generated (EOS not included)
    std::vector<Logprobs> record;      // per token, when asked for
    double logprob = 0;                // sum, EOS included
    double score = 0;
    bool ended = false;  // by EOS
};

class BeamSearch {
public:
    explicit BeamSearch(const BeamParams& params);

    // Live beams; there is one, empty, at the start.
    const std::vector<Hypothesis>& beams() const { return beams_; }

    // logprobs[b]: log-probabilities of beam b's next token ([vocab]).
    // record(b, token), when given, is stored with the token (--logprobs).
    // Returns, for every new live beam, the index of its parent beam.
    template <class Record>
    const std::vector<int>& step(std::span<const std::span<const float>> logprobs, Record&& record);
    const std::vector<int>& step(std::span<const std::span<const float>> logprobs) {
        return step(logprobs, [](int, std::int32_t) { return Logprobs{}; });
    }

    bool done() const { return done_; }
    // The n_best best hypotheses, best first (live beams included).
    std::vector<Hypothesis> finish();

private:
    struct Extension {
        double logprob;
        int beam;
        std::int32_t token;
    };
    void rank(std::span<const std::span<const float>> logprobs);
    double score(double logprob, std::size_t length) const;
    void add_finished(Hypothesis hypothesis);
    void check_done();

    BeamParams params_;
    std::vector<Hypothesis> beams_;
    std::vector<Hypothesis> finished_;  // best first, at most params_.beams
    std::vector<Extension> ranked_;
    std::vector<int> parents_;
    bool done_ = false;
};

template <class Record>
const std::vector<int>& BeamSearch::step(std::span<const std::span<const float>> logprobs, Record&& record) {
    rank(logprobs);
    std::vector<Hypothesis> next;
    parents_.clear();
    const auto width = std::size_t(params_.beams);
    for (std::size_t i = 0; i < ranked_.size() && next.size() < width; ++i) {
        const Extension& e = ranked_[i];
        const Hypothesis& parent = beams_[std::size_t(e.beam)];
        if (e.token == params_.eos) {
            if (i >= width) continue;
            Hypothesis done = parent;
            done.logprob = e.logprob;
            done.ended = true;
            done.score = score(e.logprob, parent.tokens.size() + 1);
            add_finished(std::move(done));
            continue;
        }
        Hypothesis child = parent;
        child.tokens.push_back(e.token);
        child.record.push_back(record(e.beam, e.token));
        child.logprob = e.logprob;
        next.push_back(std::move(child));
        parents_.push_back(e.beam);
    }
    beams_ = std::move(next);
    check_done();
    return parents_;
}

}  // namespace heads::decoding
