// libFuzzer target: arbitrary bytes as a KV policy spec (decode
// --kv-policy, compress-kv --policy, a frame's heads.policy). A hostile spec
// may only ever raise heads::Error; a policy made is named canonically, and
// its name makes the same policy back (a frame's heads.policy goes on as the
// policy that wrote it). A budgeted spec parses to parameters in range: a
// share in (0, 1] or at least one slot, counts that fit positions.

#include <cmath>
#include <cstddef>
#include <cstdint>
#include <limits>
#include <memory>
#include <string>
#include <string_view>

#include "fuzz_check.hpp"
#include "kv/head_policy.hpp"
#include "kv/policy.hpp"
#include "tensor/error.hpp"

namespace {

using heads::fuzz::check;

void check_spec(const heads::HeadPolicySpec& spec) {
    constexpr std::int64_t kMax = std::numeric_limits<std::int32_t>::max();
    const bool share = spec.budget_share > 0 && spec.budget_share <= 1 && std::isfinite(spec.budget_share);
    check(share != (spec.budget_share == 0), "a budget share outside (0, 1]");
    check(share || (spec.budget_slots >= 1 && spec.budget_slots <= kMax), "neither a share nor a slot budget");
    check(spec.sink >= 0 && spec.sink <= kMax && spec.recent >= 1 && spec.recent <= kMax, "sink or recent out of range");
    check(spec.window >= 1 && spec.window <= kMax && spec.pool >= 1 && spec.pool % 2 == 1 && spec.pool <= kMax,
          "window or pool out of range");
    check(spec.protect >= 0 && spec.protect <= 1, "protect outside [0, 1]");
    check(std::isfinite(spec.beta) && spec.beta >= 0 && spec.floor >= 0 && spec.floor <= 1, "beta or floor out of range");
    check(!spec.head_aware() || !spec.by.empty(), "a head-aware policy without its column");
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    const std::string_view spec(reinterpret_cast<const char*>(data), size);
    std::unique_ptr<heads::KvPolicy> policy;
    try {
        policy = heads::make_kv_policy(spec);
    } catch (const heads::Error& error) {
        check(std::string_view(error.what()).find("KV cache policy") != std::string_view::npos,
              "an error that does not say it is about the KV cache policy");
        return 0;
    }
    // Accepted: from here on any exception is a failure (the replay counts it, libFuzzer aborts).
    const std::string name = policy->name();
    (void)policy->span();
    (void)policy->slides();
    const std::string_view eviction = heads::eviction_policy(name);
    if (heads::is_head_policy(eviction)) check_spec(heads::parse_head_policy(eviction));
    check(heads::make_kv_policy(name)->name() == name, "a policy's name makes another policy");
    (void)heads::kv_policy_table(spec);
    return 0;
}
