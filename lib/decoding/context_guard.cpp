#include "decoding/context_guard.hpp"

#include <limits>

#include "tensor/error.hpp"

namespace heads::decoding {

ContextGuard::ContextGuard(const Model& model, KvPolicy* policy, std::int64_t keep)
    : model_(model), policy_(policy), keep_(keep) {
    if (keep_ >= 0 && keep_ >= model.context_length())
        throw UsageError(Param{"keep"}, "keeping {} positions must leave room below the context length ({})", keep_,
                         model.context_length());
    if (policy_ && policy_->span() >= model.context_length())
        throw UsageError(Param{"kv_policy"}, "{}: it lets the model see {} positions; the context length is {}",
                         policy_->name(), policy_->span(), model.context_length());
}

std::int64_t ContextGuard::room(const Session& session) const {
    if (policy_ && policy_->slides()) return std::numeric_limits<std::int32_t>::max() / 2;
    return model_.context_length() - session.next_position();
}

void ContextGuard::make_room(Session& session, std::int64_t n) const {
    const std::int64_t length = model_.context_length();
    if (room(session) >= n) return;
    if (keep_ < 0)
        throw Error(Param{"context_shift"},
                    "the context length of {} positions is reached (keeping the first positions and dropping half "
                    "the rest, or a sliding window, goes on past it)",
                    length);
    // llama.cpp's context shift: drop half of what follows the kept start.
    const std::int64_t next = session.next_position();
    const std::int64_t discard = (next - keep_) / 2;
    if (discard < 1 || length - (next - discard) < n)
        throw Error(Param{"keep"}, "the context length of {} positions is reached and keeping {} leaves no room",
                    length, keep_);
    KvCache& cache = session.cache();
    std::vector<std::int64_t> slots;
    for (std::int64_t l = 0; l < cache.n_layers(); ++l)
        for (std::int64_t g = 0; g < cache.n_kv_heads(l); ++g) {
            const KvHead& head = cache.head(l, g);
            slots.clear();
            for (std::int64_t s = 0; s < head.slots; ++s) {
                const std::int32_t p = head.pos.data()[s];
                if (p < keep_ || p >= keep_ + discard) slots.push_back(s);
            }
            cache.keep(l, g, slots);
        }
    shift_positions(cache, std::int32_t(keep_ + discard), std::int32_t(-discard), model_.config().rope);
    session.set_next_position(next - discard);
}

void ContextGuard::start(Session& session) const {
    if (policy_) policy_->start(session.cache());
}

void ContextGuard::adopt(Session& session, const KvFrameContents& frame) const {
    if (policy_) policy_->adopt(session.cache(), frame);
}

void ContextGuard::after_step(Session& session, std::int64_t new_tokens) const {
    if (policy_) policy_->apply(session.cache(), {session.next_position(), new_tokens, &model_.config().rope});
}

}  // namespace heads::decoding
