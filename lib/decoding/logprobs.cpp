#include "decoding/logprobs.hpp"

#include <algorithm>
#include <numeric>

#include <fmt/format.h>

#include "io/output.hpp"
#include "sampling/distribution.hpp"

namespace heads::decoding {

Logprobs make_logprobs(std::span<const float> logits, std::int32_t token, int k, std::vector<float>& scratch) {
    scratch.resize(logits.size());
    log_softmax(scratch, logits);
    Logprobs out;
    out.chosen = scratch[std::size_t(token)];
    std::vector<std::int32_t> ids(logits.size());
    std::iota(ids.begin(), ids.end(), 0);
    const auto top = std::min<std::size_t>(std::size_t(k), ids.size());
    std::partial_sort(ids.begin(), ids.begin() + std::ptrdiff_t(top), ids.end(), [&](std::int32_t a, std::int32_t b) {
        return scratch[a] > scratch[b] || (scratch[a] == scratch[b] && a < b);
    });
    for (std::size_t i = 0; i < top; ++i) out.top.emplace_back(ids[i], scratch[std::size_t(ids[i])]);
    return out;
}

LogprobsWriter::LogprobsWriter(Sink out, int k) : out_(std::move(out)), k_(k) {
    std::string header = "seq\tstep\tid\tlogprob";
    for (int i = 1; i <= k; ++i) header += fmt::format("\ttop{}_id\ttop{}_logprob", i, i);
    write_all(out_, header + "\n");
}

void LogprobsWriter::write(std::int64_t seq, std::int64_t step, std::int32_t token, const Logprobs& lp) {
    std::string line = fmt::format("{}\t{}\t{}\t{:.6g}", seq, step, token, lp.chosen);
    for (const auto& [id, logprob] : lp.top) line += fmt::format("\t{}\t{:.6g}", id, logprob);
    line += '\n';
    write_all(out_, line);
}

}  // namespace heads::decoding
