// Beam search over sessions forked per beam.

#include <vector>

#include "decoding/beam.hpp"
#include "decoding/strategy.hpp"
#include "sampling/distribution.hpp"
#include "tensor/error.hpp"

namespace heads::decoding {
namespace {

class Beam final : public Strategy {
public:
    Beam(Session& session, const sampling::SamplingParams& sampling, const ContextGuard& guard,
         const BeamOptions& options)
        : root_(session), sampler_(sampling), guard_(guard), options_(options) {
        if (!sampler_.greedy())
            throw UsageError(Param{"temperature"}, "beam search ranks by log-probability: the temperature must be 0");
    }

    std::string name() const override {
        return fmt::format("beam search ({} beams), {}", options_.beams, sampler_.describe());
    }

    void prime(std::span<const std::int32_t> prompt, const KvFrameContents* frame) override {
        prime_session(root_, prompt, frame, guard_);
    }

    void run(Generation& gen) override {
        const Limits& limits = gen.limits();
        BeamSearch search({options_.beams, options_.length_penalty, options_.early_stopping, options_.n_best,
                           limits.ignore_eos ? -1 : limits.eos});
        const int k = gen.sink().logprobs_k();
        std::vector<Session*> live{&root_};
        std::vector<std::int32_t> pending{gen.history().back()};
        const std::span<const std::int32_t> prompt = gen.history();
        while (!search.done() && std::int64_t(search.beams().front().tokens.size()) < gen.remaining()) {
            // Every live beam runs its pending token.
            const auto& beams = search.beams();
            logits_.resize(live.size());
            logprobs_.resize(live.size());
            for (std::size_t b = 0; b < live.size(); ++b) {
                guard_.make_room(*live[b], 1);
                const auto logits = live[b]->forward(request_for({&pending[b], 1})).logits;
                guard_.after_step(*live[b], 1);
                ++stats_.forwards;
                logits_[b].assign(logits.begin(), logits.end());
                history_.assign(prompt.begin(), prompt.end());
                history_.insert(history_.end(), beams[b].tokens.begin(), beams[b].tokens.end());
                work_ = logits_[b];
                sampler_.process(work_, history_);
                logprobs_[b].resize(work_.size());
                log_softmax(logprobs_[b], work_);
            }
            std::vector<std::span<const float>> rows(logprobs_.begin(), logprobs_.end());
            const auto& parents = search.step(rows, [&](int b, std::int32_t token) {
                return k > 0 ? make_logprobs(logits_[std::size_t(b)], token, k, scratch_) : Logprobs{};
            });
            if (parents.empty()) break;
            // New beams take over their parent's session; a parent's second child gets a copy.
            std::vector<Session*> next(parents.size(), nullptr);
            std::vector<bool> claimed(live.size(), false);
            for (std::size_t i = 0; i < parents.size(); ++i)
                if (!claimed[std::size_t(parents[i])]) {
                    claimed[std::size_t(parents[i])] = true;
                    next[i] = live[std::size_t(parents[i])];
                }
            for (std::size_t b = 0; b < live.size(); ++b)
                if (!claimed[b]) spare_.push_back(live[b]);
            for (std::size_t i = 0; i < parents.size(); ++i) {
                if (next[i]) continue;
                next[i] = take_spare();
                next[i]->copy_from(*live[std::size_t(parents[i])]);
            }
            live = std::move(next);
            pending.clear();
            for (const auto& beam : search.beams()) pending.push_back(beam.tokens.back());
        }
        // The root session primes the next prompt; every other one is spare.
        spare_.clear();
        for (const auto& s : owned_) spare_.push_back(s.get());

        const auto hypotheses = search.finish();
        for (const auto& hypothesis : hypotheses) {
            for (std::size_t i = 0; i < hypothesis.tokens.size(); ++i)
                if (!gen.sink().push(hypothesis.tokens[i], k > 0 ? &hypothesis.record[i] : nullptr)) break;
            gen.end();
        }
        if (!hypotheses.empty()) stats_.tokens += std::int64_t(hypotheses.front().tokens.size());
    }

private:
    Session* take_spare() {
        if (!spare_.empty()) {
            Session* s = spare_.back();
            spare_.pop_back();
            return s;
        }
        owned_.push_back(root_.fork());
        return owned_.back().get();
    }

    Session& root_;
    sampling::Sampler sampler_;
    const ContextGuard& guard_;
    BeamOptions options_;
    std::vector<std::unique_ptr<Session>> owned_;
    std::vector<Session*> spare_;
    std::vector<std::vector<float>> logits_, logprobs_;
    std::vector<float> work_, scratch_;
    std::vector<std::int32_t> history_;
};

}  // namespace

std::unique_ptr<Strategy> make_beam(Session& session, const sampling::SamplingParams& sampling,
                                    const ContextGuard& guard, const BeamOptions& options) {
    return std::make_unique<Beam>(session, sampling, guard, options);
}

}  // namespace heads::decoding
