#include "decoding/speculative.hpp"

#include <algorithm>

#include "decoding/ngram.hpp"
#include "decoding/strategy.hpp"
#include "sampling/chain.hpp"
#include "sampling/distribution.hpp"
#include "sampling/speculative.hpp"
#include "tensor/error.hpp"

namespace heads::decoding {
namespace {

class Speculative final : public Strategy {
public:
    Speculative(Session& session, const sampling::SamplingParams& sampling, const ContextGuard& guard,
                std::unique_ptr<Drafter> drafter)
        : session_(session), sampler_(sampling), guard_(guard), drafter_(std::move(drafter)) {}

    std::string name() const override { return "speculative: " + drafter_->name() + ", " + sampler_.describe(); }

    void prime(std::span<const std::int32_t> prompt, const KvFrameContents* frame) override {
        prime_session(session_, prompt, frame, guard_);
        drafter_->prime(prompt);
    }

    void run(Generation& gen) override {
        const auto vocab = std::size_t(session_.model().vocab_size());
        std::int32_t pending = gen.history().back();
        while (!gen.done()) {
            guard_.make_room(session_, 1);
            DraftLimits limits;
            limits.room = guard_.room(session_) - 1;
            limits.depth = int(std::min<std::int64_t>({gen.remaining() - 1, limits.room, 1 << 20}));
            tree_.reset(pending);
            drafter_->draft(gen.history(), tree_, limits, gen.rng());
            tree_.tokens(tokens_);
            tree_.positions(std::int32_t(session_.next_position()), positions_);
            if (tree_.size() > 1)
                tree_.mask(mask_);
            else
                mask_.clear();
            auto request = request_for(tokens_, LogitRows::all);
            request.positions = positions_;
            request.mask = mask_;
            const auto logits = session_.forward(request).logits;
            ++stats_.forwards;
            stats_.drafted += tree_.candidate_count();

            // Walk the tree from the root.
            path_.assign(1, 0);
            std::int32_t node = 0;
            for (;;) {
                const auto row = logits.subspan(std::size_t(node) * vocab, vocab);
                work_.assign(row.begin(), row.end());
                p_.resize(vocab);
                sampler_.distribution(p_, work_, gen.history());
                std::int32_t accepted = -1;
                for (const std::int32_t child : tree_.candidates(node))
                    if (sampling::accept_draft(p_, drafter_->q(child), tree_.token(child), gen.rng())) {
                        accepted = child;
                        break;
                    }
                if (accepted < 0) {
                    // Nothing (more) accepted: one token from what is left of p.
                    pending = sampler_.greedy() ? argmax(p_) : sampling::draw(p_, gen.rng().uniform());
                    gen.emit(pending, row);
                    break;
                }
                ++stats_.accepted;
                path_.push_back(accepted);
                node = accepted;
                if (!gen.emit(tree_.token(accepted), row)) break;
            }
            if (gen.done()) break;
            rows_.assign(path_.begin(), path_.end());
            session_.keep_rows(rows_);
            guard_.after_step(session_, std::int64_t(rows_.size()));
            drafter_->update(tree_, logits, path_);
        }
        stats_.tokens += gen.generated();
        stats_.draft_forwards = drafter_->forwards();
    }

private:
    Session& session_;
    sampling::Sampler sampler_;
    const ContextGuard& guard_;
    std::unique_ptr<Drafter> drafter_;
    TokenTree tree_;
    std::vector<std::int32_t> tokens_, positions_, path_;
    std::vector<std::int64_t> rows_;
    std::vector<std::uint8_t> mask_;
    std::vector<float> work_, p_;
};

// --draft: a smaller model proposes a chain.
class ModelDrafter final : public Drafter {
public:
    ModelDrafter(Session& draft, const sampling::SamplingParams& sampling, const ContextGuard& guard, int max_tokens,
                 float p_min)
        : draft_(draft), sampler_(sampling), guard_(guard), max_tokens_(max_tokens), p_min_(p_min) {
        if (max_tokens_ < 1)
            throw UsageError(Param{"draft_max"}, "a draft must be at least 1 token long, not {}", max_tokens_);
        if (!(p_min_ >= 0 && p_min_ <= 1))
            throw UsageError(Param{"draft_p_min"}, "the draft's probability floor must be in [0, 1], not {}", p_min_);
    }

    std::string name() const override {
        return fmt::format("draft model {} (up to {} tokens)", draft_.model().dir().string(), max_tokens_);
    }

    void prime(std::span<const std::int32_t> prompt) override {
        forwards_ += prime_session(draft_, prompt, nullptr, guard_);
        held_ = prompt.size() - 1;
    }

    void draft(std::span<const std::int32_t> context, TokenTree& tree, const DraftLimits& limits,
               sampling::Rng& rng) override {
        const auto vocab = std::size_t(draft_.model().vocab_size());
        const int depth = std::min(limits.depth, max_tokens_);
        run_ = 0;
        if (depth < 1) return;
        // What the draft has not seen yet: the last accepted tokens and the pending one.
        auto feed = context.subspan(held_);
        held_ = context.size();
        history_.assign(context.begin(), context.end());
        q_.resize(std::size_t(depth + 1) * vocab);
        std::int32_t at = 0;
        for (int i = 0; i < depth; ++i) {
            guard_.make_room(draft_, std::int64_t(feed.size()));
            const auto logits = draft_.forward(request_for(feed)).logits;
            guard_.after_step(draft_, std::int64_t(feed.size()));
            ++forwards_;
            if (i > 0) ++run_;
            work_.assign(logits.begin(), logits.end());
            const std::span<float> q(q_.data() + std::size_t(i + 1) * vocab, vocab);
            sampler_.distribution(q, work_, history_);
            if (p_min_ > 0 && *std::max_element(q.begin(), q.end()) < p_min_) break;
            const std::int32_t x = sampler_.greedy() ? argmax(q) : sampling::draw(q, rng.uniform());
            at = tree.add(at, x, true);  // a chain: node i + 1
            history_.push_back(x);
            drafted_ = x;
            feed = {&drafted_, 1};
        }
    }

    std::span<const float> q(std::int32_t node) const override {
        const auto vocab = std::size_t(draft_.model().vocab_size());
        return {q_.data() + std::size_t(node) * vocab, vocab};
    }

    void update(const TokenTree&, std::span<const float>, std::span<const std::int32_t> path) override {
        // The draft ran `run_` drafted tokens; keep those the target accepted.
        const auto accepted = std::int64_t(path.size()) - 1;
        const auto kept = std::min(accepted, run_);
        draft_.truncate(draft_.next_position() - (run_ - kept));
        held_ += std::size_t(kept);
    }

private:
    Session& draft_;
    sampling::Sampler sampler_;
    const ContextGuard& guard_;
    int max_tokens_;
    float p_min_;
    std::size_t held_ = 0;  // context tokens in the draft's cache
    std::int64_t run_ = 0;  // drafted tokens the draft ran in the last step
    std::int32_t drafted_ = 0;
    std::vector<std::int32_t> history_;
    std::vector<float> q_, work_;  // q_: [node, vocab]
};

// --prompt-lookup: n-grams of the context.
class LookupDrafter final : public Drafter {
public:
    LookupDrafter(int max_tokens, int ngram_min, int ngram_max)
        : max_tokens_(max_tokens), ngram_min_(ngram_min), ngram_max_(ngram_max) {
        if (max_tokens_ < 1)
            throw UsageError(Param{"prompt_lookup"}, "a lookup draft must be at least 1 token long, not {}",
                             max_tokens_);
        if (ngram_min_ < 1 || ngram_max_ < ngram_min_)
            throw UsageError(Param{"lookup_ngram"}, "n-gram sizes MIN,MAX need 1 <= MIN <= MAX, not {},{}", ngram_min_,
                             ngram_max_);
    }
    std::string name() const override {
        return fmt::format("prompt lookup (up to {} tokens, n-grams {} to {})", max_tokens_, ngram_min_, ngram_max_);
    }
    void draft(std::span<const std::int32_t> context, TokenTree& tree, const DraftLimits& limits,
               sampling::Rng&) override {
        const auto drafted = prompt_lookup(context, ngram_min_, ngram_max_, std::min(max_tokens_, limits.depth));
        tree.add_path(0, drafted);
    }

private:
    int max_tokens_, ngram_min_, ngram_max_;
};

// --lookahead: Jacobi iteration beside the verification, in the same pass.
class LookaheadDrafter final : public Drafter {
public:
    LookaheadDrafter(int window, int ngram, int candidates)
        : w_(window), n_(ngram), g_(candidates), pool_(ngram, candidates) {
        if (w_ < 1 || n_ < 2 || g_ < 1)
            throw UsageError(Param{"lookahead"}, "lookahead W,N,G needs W >= 1, N >= 2 and G >= 1, not {},{},{}", w_,
                             n_, g_);
        levels_.assign(std::size_t(n_ - 1), std::vector<std::int32_t>(std::size_t(w_), 0));
        rows_ = levels_;
    }

    std::string name() const override { return fmt::format("lookahead (W {}, N {}, G {})", w_, n_, g_); }

    void prime(std::span<const std::int32_t> prompt) override {
        pool_.clear();
        // A deterministic start for the window: tokens of the prompt.
        for (int j = 0; j < n_ - 1; ++j)
            for (int i = 0; i < w_; ++i)
                levels_[std::size_t(j)][std::size_t(i)] = prompt[std::size_t(i * 7 + j * 13) % prompt.size()];
    }

    void draft(std::span<const std::int32_t>, TokenTree& tree, const DraftLimits& limits, sampling::Rng&) override {
        // Candidates: pool n-grams that start with the pending token.
        int added = 0;
        for (const auto gram : pool_.find(tree.token(0))) {
            if (added++ == g_ || limits.depth < 1) break;
            tree.add_path(0, gram.first(std::min<std::size_t>(gram.size(), std::size_t(limits.depth))));
        }
        // The window: level 0 continues the root along the columns; level j
        // of column i continues level j - 1 of that column (position root + i + j).
        windowed_ = limits.room >= std::int64_t(w_ - 1 + n_ - 2);
        if (!windowed_) return;
        rows_[0][0] = 0;
        for (int i = 1; i < w_; ++i)
            rows_[0][std::size_t(i)] = tree.add(rows_[0][std::size_t(i - 1)], levels_[0][std::size_t(i)], false);
        for (std::size_t j = 1; j < levels_.size(); ++j)
            for (std::size_t i = 0; i < std::size_t(w_); ++i)
                rows_[j][i] = tree.add(rows_[j - 1][i], levels_[j][i], false);
    }

    void update(const TokenTree& tree, std::span<const float> logits, std::span<const std::int32_t> path) override {
        if (!windowed_) return;
        const auto vocab = logits.size() / std::size_t(tree.size());
        // Column i of the deepest level predicts position root + i + N - 1.
        predictions_.resize(std::size_t(w_));
        for (std::size_t i = 0; i < std::size_t(w_); ++i)
            predictions_[i] = argmax(logits.subspan(std::size_t(rows_.back()[i]) * vocab, vocab));
        // Each column read along its levels, then its prediction, is an n-gram.
        gram_.resize(std::size_t(n_ - 1));
        for (std::size_t i = 0; i < std::size_t(w_); ++i) {
            for (std::size_t j = 1; j < levels_.size(); ++j) gram_[j - 1] = levels_[j][i];
            gram_.back() = predictions_[i];
            pool_.add(i == 0 ? tree.token(0) : levels_[0][i], gram_);
        }
        // One Jacobi iteration: every level moves up, the predictions come in.
        std::rotate(levels_.begin(), levels_.begin() + 1, levels_.end());
        levels_.back() = predictions_;
        // The root moved by 1 + accepted positions: columns move left by the accepted count.
        const auto shift = std::min<std::size_t>(path.size() - 1, std::size_t(w_ - 1));
        if (shift > 0)
            for (auto& level : levels_) {
                std::rotate(level.begin(), level.begin() + std::ptrdiff_t(shift), level.end());
                std::fill(level.end() - std::ptrdiff_t(shift), level.end(), level[std::size_t(w_) - shift - 1]);
            }
    }

private:
    int w_, n_, g_;
    NgramPool pool_;
    std::vector<std::vector<std::int32_t>> levels_;  // [N-1][W] the window's tokens; levels_[0][0] stands for the root
    std::vector<std::vector<std::int32_t>> rows_;    // [N-1][W] their rows in the tree
    std::vector<std::int32_t> predictions_, gram_;
    bool windowed_ = false;
};

}  // namespace

std::unique_ptr<Strategy> make_speculative(Session& session, const sampling::SamplingParams& sampling,
                                           const ContextGuard& guard, std::unique_ptr<Drafter> drafter) {
    return std::make_unique<Speculative>(session, sampling, guard, std::move(drafter));
}

std::unique_ptr<Drafter> make_model_drafter(Session& draft, const sampling::SamplingParams& sampling,
                                            const ContextGuard& guard, int max_tokens, float p_min) {
    return std::make_unique<ModelDrafter>(draft, sampling, guard, max_tokens, p_min);
}

std::unique_ptr<Drafter> make_lookup_drafter(int max_tokens, int ngram_min, int ngram_max) {
    return std::make_unique<LookupDrafter>(max_tokens, ngram_min, ngram_max);
}

std::unique_ptr<Drafter> make_lookahead_drafter(int window, int ngram, int candidates) {
    return std::make_unique<LookaheadDrafter>(window, ngram, candidates);
}

}  // namespace heads::decoding
