#include "decoding/forced.hpp"

#include <algorithm>

#include "decoding/strategy.hpp"

namespace heads::decoding {

void forced_logits(Session& session, const ContextGuard& guard, std::span<const std::int32_t> prompt,
                   std::span<const std::int32_t> continuation, std::vector<float>& logits) {
    const auto vocab = std::size_t(session.model().vocab_size());
    prime_session(session, prompt, nullptr, guard);
    logits.resize(continuation.size() * vocab);
    // The pending token is the prompt's last, as in every strategy's first step.
    std::int32_t token = prompt.back();
    for (std::size_t i = 0; i < continuation.size(); ++i) {
        guard.make_room(session, 1);
        const auto row = session.forward(request_for({&token, 1})).logits;
        guard.after_step(session, 1);
        std::copy(row.begin(), row.end(), logits.begin() + std::ptrdiff_t(i * vocab));
        token = continuation[i];
    }
}

}  // namespace heads::decoding
