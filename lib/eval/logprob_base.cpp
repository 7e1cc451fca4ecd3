#include "eval/logprob_base.hpp"

#include <algorithm>
#include <string>

#include "safetensors/keys.hpp"
#include "tensor/error.hpp"

namespace heads {

const float* check_logprob_base(const Frame& frame, const std::string& where, std::int64_t vocab_size, std::int64_t ctx,
                                std::span<const std::int32_t> targets) {
    const auto kind = frame.metadata.find(keys::kind);
    if (kind == frame.metadata.end() || kind->second != kinds::logprobs)
        throw Error("{}: not a file of log-probabilities written by infer --ppl --save-logits", where);
    const Tensor& log_probs = frame.at("log_probs");
    const Tensor& saved_targets = frame.at("targets");
    const auto saved_ctx = frame.metadata.find(keys::ctx);
    if (saved_ctx == frame.metadata.end() || saved_ctx->second != std::to_string(ctx))
        throw Error("{}: the base was scored with ctx {}, this run uses {}", where,
                    saved_ctx == frame.metadata.end() ? "?" : saved_ctx->second, ctx);
    if (log_probs.dtype() != DType::F32 || log_probs.rank() != 2 || log_probs.dim(1) != vocab_size)
        throw Error("{}: log_probs must be F32 [predictions, {}] (this model's vocabulary)", where, vocab_size);
    if (saved_targets.dtype() != DType::I32 || saved_targets.numel() != std::int64_t(targets.size()) ||
        log_probs.dim(0) != std::int64_t(targets.size()) ||
        !std::equal(targets.begin(), targets.end(), saved_targets.data<std::int32_t>().begin()))
        throw Error("{}: the base scored other tokens ({} predictions; this run has {})", where, log_probs.dim(0),
                    targets.size());
    return log_probs.data<float>().data();
}

}  // namespace heads
