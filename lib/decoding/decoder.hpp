#pragma once
// What decode does for each prompt, from its options: loads the model (and a
// draft model), applies head masks, picks the strategy, seeds each sequence
// and keeps the statistics -v prints. The tool only parses options and
// moves prompts in and tokens out.

#include <cstdint>
#include <filesystem>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "decoding/generation.hpp"
#include "decoding/strategy.hpp"
#include "kv/kv_frame.hpp"
#include "kv/policy.hpp"
#include "model/model.hpp"
#include "sampling/params.hpp"

namespace heads::decoding {

struct DecodeOptions {
    Limits limits;
    sampling::SamplingParams sampling;
    std::uint64_t seed = 0;
    Precision precision = Precision::automatic;
    std::optional<SlotType> kv_type;  // how every session's KV cache stores keys and values (unset: the model's default)
    // Strategy: the first that is set (setting two is a usage error).
    BeamOptions beam;             // beams > 1
    float penalty_alpha = -1;     // >= 0: contrastive search (with sampling.top_k candidates)
    std::filesystem::path draft;  // speculative with a draft model
    int draft_max = 8;
    float draft_p_min = 0;
    int prompt_lookup = 0;  // > 0: speculative with prompt lookup (tokens per draft)
    int lookup_ngram_min = 1, lookup_ngram_max = 3;
    std::vector<int> lookahead;            // W, N, G: speculative with lookahead
    std::filesystem::path contrast_heads;  // DeCoRe: a head table
    std::string contrast_by = "retrieval";
    int contrast_top = 8;
    ContrastParams contrast{1.0f, 0.0f};
    // Heads and cache.
    std::string mask_heads;  // L.H,... (or a file)
    std::string kv_policy = "full";
    std::int64_t keep = -1;
};

class Decoder {
public:
    Decoder(Context& ctx, const std::filesystem::path& model_dir, const DecodeOptions& options);
    ~Decoder();

    const Model& model() const { return *model_; }

    // One prompt: ids, or (frame non-null) the cache of a KV frame whose
    // heads.tokens are the prompt. Sequence n (0, 1, ...) draws its random
    // numbers from Rng(seed, n).
    void generate(std::span<const std::int32_t> prompt, const KvFrameContents* frame, TokenSink& sink);

    // For -v: the strategy, then tokens, passes, acceptance and speed.
    std::string describe() const;
    std::string report() const;

private:
    DecodeOptions options_;
    std::shared_ptr<const Model> model_, draft_model_;
    std::unique_ptr<KvPolicy> policy_, draft_policy_, masked_policy_;
    std::unique_ptr<ContextGuard> guard_, draft_guard_, masked_guard_;
    std::unique_ptr<Session> session_, masked_, draft_;
    std::unique_ptr<Strategy> strategy_;
    std::uint64_t sequences_ = 0;
};

}  // namespace heads::decoding
