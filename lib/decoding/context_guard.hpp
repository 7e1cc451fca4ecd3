#pragma once
// Keeps a session inside what the model and the user allow: before every
// forward pass, room for the new tokens within the context length (else a
// clear error, or with --keep N llama.cpp's context shift: the oldest half of
// the positions after the first N is dropped and the rest moves down, keys
// re-rotated); after every step, the --kv-policy (which may evict slots and
// lets generation run past the context length with bounded memory).

#include <cstdint>

#include "kv/policy.hpp"
#include "model/session.hpp"

namespace heads::decoding {

class ContextGuard {
public:
    // policy: may be null (keep everything). keep: -1 without --keep.
    ContextGuard(const Model& model, KvPolicy* policy, std::int64_t keep);

    // Before a forward of n tokens at session.next_position() onwards.
    void make_room(Session& session, std::int64_t n) const;
    // A sequence begins (from ids, in an empty session): the policy settles its budgets afresh.
    void start(Session& session) const;
    // The sequence goes on from a KV frame just loaded: the policy takes the frame's budgets and scores.
    void adopt(Session& session, const KvFrameContents& frame) const;
    // Whether the prompt runs whole before the policy acts (KvPolicy::reads_whole_prompt).
    bool reads_whole_prompt() const { return policy_ && policy_->reads_whole_prompt(); }
    // After a step (a forward, then any keep_rows) that added `new_tokens`.
    void after_step(Session& session, std::int64_t new_tokens) const;
    // The most positions one step may use beyond next_position (for drafts).
    std::int64_t room(const Session& session) const;

private:
    const Model& model_;
    KvPolicy* policy_;
    std::int64_t keep_;
};

}  // namespace heads::decoding
