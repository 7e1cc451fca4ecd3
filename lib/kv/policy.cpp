#include "kv/policy.hpp"

#include "tensor/error.hpp"

namespace heads {

std::unique_ptr<KvPolicy> make_kv_policy(std::string_view name) {
    if (name == "full" || name.empty()) return std::make_unique<FullPolicy>();
    throw Error("unknown KV cache policy '{}' (heads knows: full)", name);
}

}  // namespace heads
