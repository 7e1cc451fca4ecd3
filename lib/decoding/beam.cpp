#include "decoding/beam.hpp"

#include <algorithm>
#include <cmath>

#include "tensor/error.hpp"

namespace heads::decoding {

BeamSearch::BeamSearch(const BeamParams& params) : params_(params), beams_(1) {
    if (params.beams < 1) throw UsageError(Param{"beams"}, "beam search needs at least 1 beam, not {}", params.beams);
    if (params.n_best < 1 || params.n_best > params.beams)
        throw UsageError(Param{"n_best"}, "the hypotheses kept must be between 1 and the beams ({}), not {}",
                         params.beams, params.n_best);
}

double BeamSearch::score(double logprob, std::size_t length) const {
    return logprob / std::pow(double(std::max<std::size_t>(length, 1)), double(params_.length_penalty));
}

void BeamSearch::rank(std::span<const std::span<const float>> logprobs) {
    if (logprobs.size() != beams_.size())
        throw Error("beam search: {} rows for {} beams", logprobs.size(), beams_.size());
    ranked_.clear();
    const auto keep = std::size_t(2 * params_.beams);
    const auto better = [](const Extension& a, const Extension& b) {
        if (a.logprob != b.logprob) return a.logprob > b.logprob;
        if (a.beam != b.beam) return a.beam < b.beam;
        return a.token < b.token;
    };
    // The best `keep` of each beam, then the best `keep` of those.
    std::vector<Extension> row;
    for (std::size_t b = 0; b < beams_.size(); ++b) {
        row.clear();
        const auto lp = logprobs[b];
        for (std::size_t t = 0; t < lp.size(); ++t)
            if (std::isfinite(lp[t])) row.push_back({beams_[b].logprob + lp[t], int(b), std::int32_t(t)});
        const auto top = std::min(keep, row.size());
        std::partial_sort(row.begin(), row.begin() + std::ptrdiff_t(top), row.end(), better);
        ranked_.insert(ranked_.end(), row.begin(), row.begin() + std::ptrdiff_t(top));
    }
    const auto top = std::min(keep, ranked_.size());
    std::partial_sort(ranked_.begin(), ranked_.begin() + std::ptrdiff_t(top), ranked_.end(), better);
    ranked_.resize(top);
}

void BeamSearch::add_finished(Hypothesis hypothesis) {
    const auto at = std::find_if(finished_.begin(), finished_.end(),
                                 [&](const Hypothesis& h) { return hypothesis.score > h.score; });
    finished_.insert(at, std::move(hypothesis));
    if (finished_.size() > std::size_t(params_.beams)) finished_.pop_back();
}

void BeamSearch::check_done() {
    if (beams_.empty()) {
        done_ = true;
        return;
    }
    if (finished_.size() < std::size_t(params_.beams)) return;
    if (params_.early_stopping) {
        done_ = true;
        return;
    }
    // The best a live beam could still reach, were it to end now.
    const Hypothesis& best = beams_.front();
    done_ = finished_.back().score >= score(best.logprob, best.tokens.size());
}

std::vector<Hypothesis> BeamSearch::finish() {
    for (auto& beam : beams_) {
        beam.score = score(beam.logprob, beam.tokens.size());
        add_finished(std::move(beam));
    }
    beams_.clear();
    done_ = true;
    if (finished_.size() > std::size_t(params_.n_best)) finished_.resize(std::size_t(params_.n_best));
    return std::move(finished_);
}

}  // namespace heads::decoding
