#include "decoding/decoder.hpp"

#include <chrono>

#include <fmt/format.h>

#include "decoding/speculative.hpp"
#include "heads/head_list.hpp"
#include "heads/head_table.hpp"
#include "heads/kv_scores.hpp"
#include "io/read_file.hpp"
#include "tensor/error.hpp"
#include "tensor/quote.hpp"
#include "tokenizer/tokenizer.hpp"

namespace heads::decoding {
namespace {

// A draft model must read and write the same ids as the target.
void check_same_tokenizer(const Model& target, const Model& draft) {
    const auto where = draft.dir().string();
    if (draft.vocab_size() != target.vocab_size())
        throw Error(Param{"draft"},
                    "{}: a vocabulary of {} tokens, the model has {}: the draft must share its tokenizer", where,
                    draft.vocab_size(), target.vocab_size());
    const auto a = target.dir() / "tokenizer.model", b = draft.dir() / "tokenizer.model";
    const bool has_a = std::filesystem::exists(a), has_b = std::filesystem::exists(b);
    if (has_a != has_b)
        throw Error(Param{"draft"},
                    "{}: only one of the two models has a tokenizer.model: the draft must share the "
                    "tokenizer",
                    where);
    if (!has_a || read_file(a) == read_file(b)) return;
    // Different files may still hold the same vocabulary.
    const Tokenizer ta(a), tb(b);
    for (int id = 0; id < ta.vocab_size(); ++id)
        if (ta.piece(id) != tb.piece(id))
            throw Error(Param{"draft"}, "{}: its tokenizer differs from the model's (token {} is {}, not {})",
                        where, id, quote(tb.piece(id)), quote(ta.piece(id)));
}

int strategies_chosen(const DecodeOptions& o) {
    return int(o.beam.beams > 1) + int(o.penalty_alpha >= 0) + int(!o.draft.empty()) + int(o.prompt_lookup > 0) +
           int(!o.lookahead.empty()) + int(!o.contrast_heads.empty());
}

}  // namespace

Decoder::Decoder(Context& ctx, const std::filesystem::path& model_dir, const DecodeOptions& options)
    : options_(options) {
    if (strategies_chosen(options) > 1)
        throw UsageError(Param{"strategy"},
                         "one strategy at a time: beam search, contrastive search, a draft model, "
                         "prompt lookup, lookahead or contrast heads");
    if (!options.lookahead.empty() && options.lookahead.size() != 3)
        throw UsageError(Param{"lookahead"}, "lookahead takes three numbers W,N,G (e.g. 5,4,5), not {}",
                         options.lookahead.size());
    LoadOptions load;
    load.precision = options.precision;
    model_ = Model::load(ctx, model_dir, load);
    const LlamaConfig& config = model_->config();
    if (options_.limits.eos < 0) options_.limits.eos = config.eos_token_id;
    for (const auto& [token, bias] : options.sampling.logit_bias)
        if (token >= model_->vocab_size())
            throw UsageError(Param{"logit_bias"}, "token {} is out of range (vocabulary of {})", token,
                             model_->vocab_size());

    policy_ = make_kv_policy_for(*model_, options.kv_policy);
    guard_ = std::make_unique<ContextGuard>(*model_, policy_.get(), options.keep);
    session_ = std::make_unique<Session>(model_, ctx, SessionOptions{.kv_type = options.kv_type});
    if (!options.mask_heads.empty()) session_->set_head_mask(head_mask(config, parse_head_list(options.mask_heads)));

    const auto& s = options.sampling;
    if (options.beam.beams > 1 || options.beam.n_best > 1) {
        strategy_ = make_beam(*session_, s, *guard_, options.beam);
    } else if (options.penalty_alpha >= 0) {
        strategy_ = make_contrastive(*session_, s, *guard_, options.penalty_alpha, s.top_k);
    } else if (!options.draft.empty()) {
        draft_model_ = Model::load(ctx, options.draft, load);
        check_same_tokenizer(*model_, *draft_model_);
        draft_policy_ = make_kv_policy_for(*draft_model_, options.kv_policy);
        draft_guard_ = std::make_unique<ContextGuard>(*draft_model_, draft_policy_.get(), options.keep);
        draft_ = std::make_unique<Session>(draft_model_, ctx, SessionOptions{.kv_type = options.kv_type});
        strategy_ =
            make_speculative(*session_, s, *guard_,
                             make_model_drafter(*draft_, s, *draft_guard_, options.draft_max, options.draft_p_min));
    } else if (options.prompt_lookup > 0) {
        strategy_ = make_speculative(
            *session_, s, *guard_,
            make_lookup_drafter(options.prompt_lookup, options.lookup_ngram_min, options.lookup_ngram_max));
    } else if (!options.lookahead.empty()) {
        const auto& l = options.lookahead;
        strategy_ = make_speculative(*session_, s, *guard_, make_lookahead_drafter(l[0], l[1], l[2]));
    } else if (!options.contrast_heads.empty()) {
        if (options.contrast_top < 1)
            throw UsageError(Param{"contrast_top"}, "the number of contrast heads must be at least 1, not {}",
                             options.contrast_top);
        const HeadTable table = read_head_table(options.contrast_heads, model_->fingerprint());
        // The contrast model: the user's mask and the table's top heads.
        HeadMask mask = session_->head_mask();
        merge_head_masks(mask, top_heads_mask(config, table, options.contrast_by, options.contrast_top));
        masked_ = std::make_unique<Session>(model_, ctx, SessionOptions{.kv_type = options.kv_type});
        masked_->set_head_mask(std::move(mask));
        masked_policy_ = make_kv_policy_for(*model_, options.kv_policy);
        masked_guard_ = std::make_unique<ContextGuard>(*model_, masked_policy_.get(), options.keep);
        strategy_ = make_plain(*session_, s, *guard_, masked_.get(), masked_guard_.get(), options.contrast);
    } else {
        strategy_ = make_plain(*session_, s, *guard_);
    }
}

Decoder::~Decoder() = default;

void Decoder::generate(std::span<const std::int32_t> prompt, const KvFrameContents* frame, TokenSink& sink) {
    Generation generation(options_.limits, sink, prompt, sampling::Rng(options_.seed, sequences_++));
    if (generation.done()) {  // -n 0
        generation.end();
        return;
    }
    strategy_->prime(prompt, frame);
    const auto start = std::chrono::steady_clock::now();
    strategy_->run(generation);
    strategy_->stats().seconds += std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    if (!generation.ended()) generation.end();
}

std::string Decoder::describe() const {
    return strategy_->name();
}

std::string Decoder::report() const {
    const Stats& s = strategy_->stats();
    std::string out = fmt::format("{} tokens in {} forward passes ({:.2f} tokens per pass), {:.1f} tokens/s", s.tokens,
                                  s.forwards, s.forwards ? double(s.tokens) / double(s.forwards) : 0.0,
                                  s.seconds > 0 ? double(s.tokens) / s.seconds : 0.0);
    if (s.drafted > 0 || !options_.draft.empty() || options_.prompt_lookup > 0 || !options_.lookahead.empty())
        out += fmt::format("; drafted {}, accepted {} (acceptance {:.1f}%)", s.drafted, s.accepted,
                           s.drafted ? 100.0 * double(s.accepted) / double(s.drafted) : 0.0);
    if (s.draft_forwards > 0) out += fmt::format("; {} draft passes", s.draft_forwards);
    return out;
}

}  // namespace heads::decoding
