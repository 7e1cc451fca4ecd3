#pragma once
// The hook through which a KV cache is evicted or compressed. decode applies
// its policy after every step (so the cache never outgrows what the policy
// keeps), compress-kv applies one once to a saved cache. A policy may drop
// slots of any head (KvCache::keep), so heads end up with different numbers
// of slots, and may add synthetic slots (negative positions other than -1,
// which attention always sees). It must keep the original positions of the
// slots it keeps (keys are stored after RoPE and are not re-rotated).
//
// The policy's name is written to a KV frame's heads.policy, and
// make_kv_policy() makes the policy back from it, so a consumer keeps
// applying the policy the cache was compressed with.

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>

#include "kv/kv_cache.hpp"

namespace heads {

// What a policy knows about the step it follows.
struct KvStep {
    std::int64_t next_position = 0;  // where the sequence continues
    std::int64_t new_tokens = 0;     // slots the step appended to every head (0 for a saved cache)
};

class KvPolicy {
public:
    virtual ~KvPolicy() = default;
    // As written to heads.policy, e.g. "full" or "window:4:252"; make_kv_policy(name()) is this policy.
    virtual std::string name() const = 0;
    virtual void apply(KvCache& cache, const KvStep& step) = 0;
};

// Keeps everything.
class FullPolicy final : public KvPolicy {
public:
    std::string name() const override { return "full"; }
    void apply(KvCache&, const KvStep&) override {}
};

// The policy a heads.policy value names; throws heads::Error for one it does not know.
std::unique_ptr<KvPolicy> make_kv_policy(std::string_view name);

}  // namespace heads
