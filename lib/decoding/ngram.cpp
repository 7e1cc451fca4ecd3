#include "decoding/ngram.hpp"

#include <algorithm>

namespace heads::decoding {

std::vector<std::int32_t> prompt_lookup(std::span<const std::int32_t> context, int ngram_min, int ngram_max,
                                        int max_tokens) {
    const auto size = std::ptrdiff_t(context.size());
    for (std::ptrdiff_t n = std::min<std::ptrdiff_t>(ngram_max, size - 1); n >= ngram_min; --n) {
        const auto suffix = context.last(std::size_t(n));
        // The latest earlier occurrence: it must end before the suffix does.
        for (std::ptrdiff_t start = size - n - 1; start >= 0; --start) {
            if (!std::equal(suffix.begin(), suffix.end(), context.begin() + start)) continue;
            const std::ptrdiff_t from = start + n;
            const std::ptrdiff_t to = std::min(size, from + max_tokens);
            return {context.begin() + from, context.begin() + to};
        }
    }
    return {};
}

bool NgramPool::add(std::int32_t first, std::span<const std::int32_t> rest) {
    auto& grams = pool_[first];
    for (const auto& gram : grams)
        if (std::equal(gram.begin(), gram.end(), rest.begin(), rest.end())) return false;
    if (int(grams.size()) == per_token_) {
        grams.pop_front();
        --count_;
    }
    grams.emplace_back(rest.begin(), rest.begin() + (n_ - 1));
    ++count_;
    return true;
}

std::vector<std::span<const std::int32_t>> NgramPool::find(std::int32_t first) const {
    std::vector<std::span<const std::int32_t>> out;
    const auto it = pool_.find(first);
    if (it == pool_.end()) return out;
    for (auto gram = it->second.rbegin(); gram != it->second.rend(); ++gram) out.emplace_back(*gram);
    return out;
}

}  // namespace heads::decoding
