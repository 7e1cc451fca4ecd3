#pragma once
// The hook through which a KV cache is evicted or compressed. decode applies
// its policy after every step (so the cache never outgrows what the policy
// keeps), compress-kv applies one once to a saved cache. A policy may drop
// slots of any head (KvCache::keep), so heads end up with different numbers
// of slots, and may add synthetic slots (negative positions other than -1,
// which attention always sees). It keeps the original positions of the
// slots it keeps, except a policy that slides (window): it moves slots to
// new positions and re-rotates their keys (keys are stored after RoPE) with
// the model's RoPE, which the step gives it.
//
// Policies heads knows (man/compress-kv.1 has every parameter):
//   full                 keep everything
//   NAME:budget=B[:KEY=VALUE...]  a slot budget per KV head (head_policy.hpp):
//                        window, h2o, snapkv, pyramid, adakv, headkv, razor, duo
//   window:SINK:RECENT   StreamingLLM (Xiao et al. 2024): the first SINK slots
//                        of every head (attention sinks) and the slots of the
//                        last RECENT positions. As StreamingLLM does, the
//                        model sees distances inside the cache: the sink keys
//                        are re-rotated to sit right before the recent window,
//                        so no distance exceeds SINK + RECENT and generation
//                        goes on past the context length in bounded memory.
//   POLICY+TYPE          any of the above with its slots stored as TYPE: bf16,
//                        q8 or q4 (attention/slot_type.hpp), e.g. full+q8,
//                        razor:budget=30%:by=induction+q4, window:4:252+q8
//
// The policy's name is written to a KV frame's heads.policy, and
// make_kv_policy() makes the policy back from it, so a consumer keeps
// applying the policy the cache was compressed with.

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "kv/kv_cache.hpp"
#include "kv/kv_frame.hpp"
#include "ops/rope.hpp"

namespace heads {

// What a policy knows about the step it follows.
struct KvStep {
    std::int64_t next_position = 0;  // where the sequence continues
    std::int64_t new_tokens = 0;     // slots the step appended to every head (0 for a saved cache)
    const Rope* rope = nullptr;      // the model's RoPE, for a policy that moves slots
};

class KvPolicy {
public:
    virtual ~KvPolicy() = default;
    // As written to heads.policy, e.g. "full" or "window:4:252"; make_kv_policy(name()) is this policy.
    virtual std::string name() const = 0;
    virtual void apply(KvCache& cache, const KvStep& step) = 0;
    // Whether a sequence may run past the model's context length under this
    // policy (the distances the model sees stay bounded).
    virtual bool slides() const { return false; }
    // The most positions, counted back from the next one, the model may look
    // at under this policy (0: no bound); decode checks it fits the context.
    virtual std::int64_t span() const { return 0; }
    // A new sequence begins in `cache` (empty): forget what the last one
    // settled (budgets) and make the cache track what the policy ranks by.
    virtual void start(KvCache&) {}
    // The sequence goes on from a KV frame whose cache is now `cache`: take
    // the frame's budgets (when it was made by this policy) and its scores.
    virtual void adopt(KvCache&, const KvFrameContents&) {}
    // Whether decode, from ids, runs the whole prompt (its last token too)
    // before the policy first acts, then drops the last token's slots and
    // runs that token again, as it does with a KV frame: the policy then
    // sees the same cache and the same attention received from ids as from
    // infer --kv's frame through compress-kv.
    virtual bool reads_whole_prompt() const { return false; }
    // The slot budget of each KV head, once settled (written to KV frames), else null.
    virtual const KvBudgets* budgets() const { return nullptr; }
};

// Keeps everything.
class FullPolicy final : public KvPolicy {
public:
    std::string name() const override { return "full"; }
    void apply(KvCache&, const KvStep&) override {}
};

// A head-table column per KV head ([n_layers][n_kv_heads_l]): what the
// head-aware policies (headkv, razor, duo) allot budgets by.
using KvHeadScores = std::vector<std::vector<double>>;

// The policy a heads.policy value (or decode --kv-policy SPEC) names; throws
// heads::Error for one it does not know or bad arguments. head_scores: the
// column a head-aware policy names with by=COLUMN, when it has to settle
// budgets itself (not needed to go on from a frame that carries them).
std::unique_ptr<KvPolicy> make_kv_policy(std::string_view name, const KvHeadScores& head_scores = {});

// The eviction part of a policy's name, without its +TYPE ("razor:...+q8" -> "razor:...").
std::string_view eviction_policy(std::string_view name);

// The head table a spec reads (scores=FILE) and its column (by=COLUMN); empty when none.
struct KvPolicyTable {
    std::string file, column;
};
KvPolicyTable kv_policy_table(std::string_view name);

// Moves every slot whose position is >= `from` by `delta` positions,
// re-rotating its key: llama.cpp's context shift (decode --keep).
void shift_positions(KvCache& cache, std::int32_t from, std::int32_t delta, const Rope& rope);

}  // namespace heads
