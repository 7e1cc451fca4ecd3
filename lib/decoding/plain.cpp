// Greedy and sampling, one token per forward pass; DeCoRe's contrast.

#include <algorithm>
#include <cmath>
#include <limits>

#include "decoding/strategy.hpp"
#include "sampling/distribution.hpp"

namespace heads::decoding {
namespace {

class Plain final : public Strategy {
public:
    Plain(Session& session, const sampling::SamplingParams& sampling, const ContextGuard& guard, Session* masked,
          const ContextGuard* masked_guard, const ContrastParams& contrast)
        : session_(session), sampler_(sampling), guard_(guard), masked_guard_(masked_guard ? *masked_guard : guard),
          masked_(masked), contrast_(contrast) {}

    std::string name() const override {
        return masked_ ? "contrast-heads (DeCoRe), " + sampler_.describe() : sampler_.describe();
    }

    void prime(std::span<const std::int32_t> prompt, const KvFrameContents* frame) override {
        prime_session(session_, prompt, frame, guard_);
        // The masked copy computes its own cache: masked heads change every later layer's keys.
        if (masked_) prime_session(*masked_, prompt, nullptr, masked_guard_);
    }

    void run(Generation& gen) override {
        std::int32_t pending = gen.history().back();
        while (!gen.done()) {
            const std::span<const float> logits = step(pending);
            work_.assign(logits.begin(), logits.end());
            const std::int32_t token = sampler_.sample(work_, gen.history(), gen.rng());
            if (!gen.emit(token, logits)) break;
            pending = token;
        }
        stats_.tokens += gen.generated();
    }

private:
    // Runs the pending token; the logits of the next one.
    std::span<const float> step(std::int32_t token) {
        const std::span<const std::int32_t> one(&token, 1);
        guard_.make_room(session_, 1);
        const auto full = session_.forward(request_for(one)).logits;
        guard_.after_step(session_, 1);
        ++stats_.forwards;
        if (!masked_) return full;
        masked_guard_.make_room(*masked_, 1);
        const auto masked = masked_->forward(request_for(one)).logits;
        masked_guard_.after_step(*masked_, 1);
        return contrast(full, masked);
    }

    std::span<const float> contrast(std::span<const float> full, std::span<const float> masked) {
        probs_.resize(full.size());
        softmax(probs_, full);
        const double a = contrast_.alpha * sampling::entropy(probs_) / std::log(double(full.size()));
        contrasted_.resize(full.size());
        const float floor = contrast_.cutoff * *std::max_element(probs_.begin(), probs_.end());
        for (std::size_t i = 0; i < full.size(); ++i)
            contrasted_[i] =
                probs_[i] < floor ? -std::numeric_limits<float>::infinity() : float((1 + a) * full[i] - a * masked[i]);
        return contrasted_;
    }

    Session& session_;
    sampling::Sampler sampler_;
    const ContextGuard& guard_;
    const ContextGuard& masked_guard_;
    Session* masked_;
    ContrastParams contrast_;
    std::vector<float> work_, probs_, contrasted_;
};

}  // namespace

std::unique_ptr<Strategy> make_plain(Session& session, const sampling::SamplingParams& sampling,
                                     const ContextGuard& guard, Session* masked, const ContextGuard* masked_guard,
                                     const ContrastParams& contrast) {
    return std::make_unique<Plain>(session, sampling, guard, masked, masked_guard, contrast);
}

}  // namespace heads::decoding
