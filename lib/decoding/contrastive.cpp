// Contrastive search (Su et al. 2022), as transformers implements it:
// candidates are the top-k of the processed distribution; the score of v is
// (1 - alpha) p(v) - alpha max_j cos(h_v, h_j), h the final-norm hidden
// states of every context token (prompt included) and of the candidate.

#include <algorithm>
#include <cmath>
#include <numeric>

#include "decoding/strategy.hpp"
#include "sampling/distribution.hpp"
#include "tensor/error.hpp"

namespace heads::decoding {
namespace {

void normalize(std::span<float> v) {
    double norm = 0;
    for (const float x : v) norm += double(x) * x;
    const float scale = norm > 0 ? float(1 / std::sqrt(norm)) : 0.0f;
    for (auto& x : v) x *= scale;
}

class Contrastive final : public Strategy {
public:
    Contrastive(Session& session, const sampling::SamplingParams& sampling, const ContextGuard& guard, float alpha,
                int top_k)
        : session_(session),
          sampler_(sampling),
          guard_(guard),
          alpha_(alpha),
          top_k_(top_k),
          d_model_(session.model().config().d_model) {
        if (!sampler_.greedy())
            throw UsageError(Param{"temperature"}, "contrastive search is deterministic: the temperature must be 0");
        if (top_k_ < 1)
            throw UsageError(Param{"top_k"}, "contrastive search needs top-k candidates per step (e.g. 4), not {}",
                             top_k_);
        if (!(alpha_ >= 0 && alpha_ <= 1))
            throw UsageError(Param{"penalty_alpha"}, "the degeneration penalty must be in [0, 1], not {}", alpha_);
    }

    std::string name() const override {
        return fmt::format("contrastive search (alpha {}, top-k {}), {}", alpha_, top_k_, sampler_.describe());
    }

    void prime(std::span<const std::int32_t> prompt, const KvFrameContents* frame) override {
        prime_session(session_, prompt, frame, guard_, &context_);
        for (std::size_t at = 0; at < context_.size(); at += std::size_t(d_model_))
            normalize({context_.data() + at, std::size_t(d_model_)});
    }

    void run(Generation& gen) override {
        // The pending token alone: the first step's logits and its hidden state.
        const std::int32_t pending = gen.history().back();
        guard_.make_room(session_, 1);
        auto first = request_for({&pending, 1});
        first.final_hidden = true;
        auto result = session_.forward(first);
        guard_.after_step(session_, 1);
        ++stats_.forwards;
        logits_.assign(result.logits.begin(), result.logits.end());
        add_context(result.hidden);
        const auto vocab = logits_.size();
        const auto k = std::min<std::size_t>(std::size_t(top_k_), vocab);
        std::vector<std::uint8_t> mask(k * k, 0);
        for (std::size_t i = 0; i < k; ++i) mask[i * k + i] = 1;  // siblings: each sees only itself
        while (!gen.done()) {
            // Candidates: the k most likely of the processed distribution.
            work_ = logits_;
            sampler_.process(work_, gen.history());
            probs_.resize(vocab);
            softmax(probs_, work_);
            candidates_.resize(vocab);
            std::iota(candidates_.begin(), candidates_.end(), 0);
            std::partial_sort(candidates_.begin(), candidates_.begin() + std::ptrdiff_t(k), candidates_.end(),
                              [&](std::int32_t a, std::int32_t b) {
                                  return probs_[a] > probs_[b] || (probs_[a] == probs_[b] && a < b);
                              });
            candidates_.resize(k);
            // All of them in one pass, at the same position.
            guard_.make_room(session_, 1);
            positions_.assign(k, std::int32_t(session_.next_position()));
            auto request = request_for(candidates_, LogitRows::all);
            request.positions = positions_;
            request.mask = mask;
            request.final_hidden = true;
            result = session_.forward(request);
            ++stats_.forwards;
            hidden_.assign(result.hidden.begin(), result.hidden.end());
            std::size_t best = 0;
            double best_score = -INFINITY;
            for (std::size_t i = 0; i < k; ++i) {
                const std::span<float> h{hidden_.data() + i * std::size_t(d_model_), std::size_t(d_model_)};
                normalize(h);
                double penalty = -INFINITY;
                for (std::size_t at = 0; at < context_.size(); at += std::size_t(d_model_))
                    penalty = std::max(penalty, double(std::inner_product(
                                                    h.begin(), h.end(), context_.begin() + std::ptrdiff_t(at), 0.0f)));
                const double score = (1 - alpha_) * probs_[std::size_t(candidates_[i])] - alpha_ * penalty;
                if (score > best_score) best_score = score, best = i;
            }
            if (!gen.emit(candidates_[best], logits_)) break;
            const std::int64_t row = std::int64_t(best);
            session_.keep_rows({&row, 1});
            guard_.after_step(session_, 1);
            logits_.assign(result.logits.begin() + std::ptrdiff_t(best * vocab),
                           result.logits.begin() + std::ptrdiff_t((best + 1) * vocab));
            add_context({hidden_.data() + best * std::size_t(d_model_), std::size_t(d_model_)});
        }
        stats_.tokens += gen.generated();
    }

private:
    void add_context(std::span<const float> h) {
        const auto at = context_.size();
        context_.insert(context_.end(), h.begin(), h.end());
        normalize({context_.data() + at, h.size()});
    }

    Session& session_;
    sampling::Sampler sampler_;
    const ContextGuard& guard_;
    float alpha_;
    int top_k_;
    std::int64_t d_model_;
    std::vector<float> context_;  // [context tokens, d_model], unit rows
    std::vector<float> logits_, work_, probs_, hidden_;
    std::vector<std::int32_t> candidates_, positions_;
};

}  // namespace

std::unique_ptr<Strategy> make_contrastive(Session& session, const sampling::SamplingParams& sampling,
                                           const ContextGuard& guard, float alpha, int top_k) {
    return std::make_unique<Contrastive>(session, sampling, guard, alpha, top_k);
}

}  // namespace heads::decoding
