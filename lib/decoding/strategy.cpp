#include "decoding/strategy.hpp"

#include <algorithm>

#include "tensor/error.hpp"

namespace heads::decoding {

std::int64_t prime_session(Session& session, std::span<const std::int32_t> prompt, const KvFrameContents* frame,
                           const ContextGuard& guard, std::vector<float>* hidden) {
    if (prompt.empty()) throw Error("an empty prompt: decode needs at least one token (tokenize adds BOS)");
    if (frame) {
        if (hidden) throw UsageError("contrastive search needs the prompt's hidden states: give ids, not a KV frame");
        session.load_cache(*frame, "the prompt's KV frame");
        guard.adopt(session, *frame);
        // The last token runs again (a frame keeps no logits): drop its position.
        session.truncate(session.next_position() - 1);
        guard.after_step(session, 0);
        return 0;
    }
    // A new sequence: nothing of the last one stays, not even a synthetic
    // slot (razor's compensation token), which truncate would keep.
    session.reset();
    guard.start(session);
    if (hidden) hidden->clear();
    constexpr std::int64_t kChunk = 1024;
    std::int64_t forwards = 0;
    // The last token runs in the strategy's first step (for its logits); a
    // policy that reads the whole prompt sees it run here first, as a frame's.
    const bool whole = !hidden && guard.reads_whole_prompt();
    const auto body = whole ? prompt : prompt.first(prompt.size() - 1);
    for (std::size_t at = 0; at < body.size();) {
        guard.make_room(session, 1);
        const auto n = std::size_t(std::min({kChunk, guard.room(session), std::int64_t(body.size() - at)}));
        ForwardRequest request = request_for(body.subspan(at, n), LogitRows::none);
        request.final_hidden = hidden != nullptr;
        const auto result = session.forward(request);
        ++forwards;
        if (hidden) hidden->insert(hidden->end(), result.hidden.begin(), result.hidden.end());
        at += n;
        if (whole && at == body.size()) {
            session.truncate(session.next_position() - 1);
            guard.after_step(session, std::int64_t(n) - 1);
        } else {
            guard.after_step(session, std::int64_t(n));
        }
    }
    return forwards;
}

}  // namespace heads::decoding
