#pragma once
// One sequence being run through a Model: its KV cache, its head mask and
// the scratch memory of the forward pass. forward() takes new tokens (at
// explicit positions if wanted, with a mask among them if wanted: a tree or
// Jacobi mask verifies many draft tokens in one pass), appends their keys and
// values to the cache and returns the logits of the rows asked for. Scratch
// grows to the largest step seen and is then reused, so a decoding loop
// allocates nothing per token. Sessions of one Model share its weights.

#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "attention/attention.hpp"
#include "kv/kv_cache.hpp"
#include "kv/kv_frame.hpp"
#include "model/model.hpp"
#include "ops/buffer.hpp"

namespace heads {

enum class LogitRows { none, last, all };

// Extra outputs for analysis (infer); computing them allocates.
struct ForwardProbes {
    // Requests.
    std::vector<std::int64_t> hidden_layers;     // hidden states: L is the residual stream after layer L
    std::vector<std::int64_t> attention_layers;  // full attention probabilities of these layers
    bool received = false;                       // attention mass each slot received, every layer
    std::int64_t recent_queries = 32;            // ... and from the last this many queries
    std::vector<std::vector<HeadStatSums>>* stats = nullptr;  // [n_layers][n_heads_l], added to
    std::span<const std::int32_t> tokens;        // token at each position (for stats)

    // Results of the last forward.
    std::map<std::int64_t, std::vector<float>> hidden;     // layer → [n_new, d_model]
    std::map<std::int64_t, std::vector<float>> attention;  // layer → [n_heads_l, n_new, key_slots(layer)]
    std::vector<std::int64_t> key_slots;                   // [n_layers] slot axis of attention / received
    std::vector<std::vector<float>> received_all;          // [n_layers][n_kv_heads_l, key_slots]
    std::vector<std::vector<float>> received_recent;       // [n_layers][n_kv_heads_l, key_slots]
};

struct ForwardRequest {
    std::span<const std::int32_t> tokens;
    std::span<const std::int32_t> positions;  // empty: next_position() + i
    std::span<const std::uint8_t> mask;       // [n, n], row i = which new tokens i sees; empty: causal
    LogitRows logits = LogitRows::last;
    std::int64_t logits_from = 0;             // LogitRows::all: only rows logits_from..n-1
    bool final_hidden = false;                // the final-norm hidden state of every new row
    ForwardProbes* probes = nullptr;
    // Start at this layer with the residual stream given (what the tokens
    // made entering it, e.g. probes' hidden[first_layer - 1] of an earlier
    // pass) instead of embedding the tokens: head ablation reruns only the
    // layers a head can change. Layers before it are not run and their cache
    // is left as it is.
    std::int64_t first_layer = 0;
    std::span<const float> residual;          // [n, d_model] when first_layer > 0
    // Several sequences of these same rows at once (B = sequence_masks.size()),
    // sequence b with head mask sequence_masks[b] (as set_head_mask takes it)
    // and its own KV cache: their rows are stacked, so every weight matmul
    // multiplies B·n rows and reads each matrix once for all B, and attention
    // runs per sequence. Head ablation runs the masks of one window so. The
    // sequences share positions and next_position(); sequence 0's cache is
    // cache(), the others' are the session's too, made on first use and
    // emptied by reset(). Not with probes or final_hidden, nor on a cache
    // that tracks received mass. Empty: one sequence, with head_mask().
    std::span<const std::vector<std::vector<std::uint8_t>>> sequence_masks;
};

struct ForwardResult {
    std::span<const float> logits;  // [B, 1 or n - logits_from, vocab_size] (empty for LogitRows::none); B = 1
                                    // but for sequence_masks
    std::span<const float> hidden;  // [n, d_model] when final_hidden
};

struct SessionOptions {
    std::int64_t capacity = 0;  // slots reserved per KV head up front; 0: min(context length, 4096)
    // How the cache stores keys and values (--kv-type); unset: the model's
    // default_kv_type.
    std::optional<SlotType> kv_type{};
};

// The KV cache's slot type unless asked otherwise: bf16 when the weights'
// arithmetic is bf16 and this CPU really computes in bf16 (keys and values
// then come out of bf16 matmuls, and storing them in bf16 halves the cache at
// a KL of about 2e-5 on models/kjv's held-out text), else f32, so that f32
// arithmetic (bf16 weights widened on AVX2 included) keeps the reference's numbers.
SlotType default_kv_type(const Model& model, Context& ctx);

// Throws heads::Error "WHERE: ..." when a KV frame is from another model
// (fingerprint) or its layout differs from the model's.
void check_kv_frame(const Model& model, const KvFrameContents& frame, const std::string& where);

class Session {
public:
    Session(std::shared_ptr<const Model> model, Context& ctx, const SessionOptions& options = {});

    const Model& model() const { return *model_; }
    const std::shared_ptr<const Model>& model_ptr() const { return model_; }

    // Runs the new tokens. Throws heads::Error on an id outside the
    // vocabulary or a malformed mask; spans in the result stay valid until
    // the next forward().
    ForwardResult forward(const ForwardRequest& request);

    // The position the next token gets by default: one past the largest
    // position forwarded (or loaded, or kept by truncate/keep_rows).
    std::int64_t next_position() const { return next_position_; }

    // Starts a new sequence: an empty cache, the next token at position 0
    // (the head mask stays).
    void reset();

    KvCache& cache() { return cache_; }
    const KvCache& cache() const { return cache_; }
    // After changing the cache from outside (loading, a policy), sets where the sequence continues.
    void set_next_position(std::int64_t position) { next_position_ = position; }

    // Replaces the cache with a KV frame's and continues after its tokens.
    // Throws heads::Error "WHERE: ..." when the frame is from another model
    // (fingerprint) or its layout differs from the model's.
    void load_cache(const KvFrameContents& frame, const std::string& where);

    // Rollback: drops every slot at position >= n.
    void truncate(std::int64_t n);
    // After a forward of n rows: keeps only these rows of it (ascending), e.g.
    // the accepted path of a draft tree; they should hold consecutive positions.
    void keep_rows(std::span<const std::int64_t> rows);

    // Heads whose output is zeroed before the output projection:
    // off[l][i] for the i-th query head of layer l (config.layers[l]).
    void set_head_mask(std::vector<std::vector<std::uint8_t>> off);
    const std::vector<std::vector<std::uint8_t>>& head_mask() const { return head_off_; }

    // Bytes one row of a forward pass takes: its share of the working
    // buffers (logits as `logits` keeps them) and one position of a
    // sequence's KV cache. What batching callers budget by.
    std::int64_t bytes_per_row(LogitRows logits) const;

    // A new session with a copy of this one's cache, mask and position (beam search).
    std::unique_ptr<Session> fork() const;
    // Becomes a copy of `other` (same model); allocates only to grow.
    void copy_from(const Session& other);

private:
    // Room for n new rows in each of `sequences` sequences.
    void reserve(std::int64_t n, std::int64_t sequences, LogitRows logits);
    // Layer l's attention for `masks.size()` sequences of n rows stacked in
    // xn_ (one sequence with head_off_ when masks is empty).
    void attention_layer(std::int64_t l, std::int64_t n, std::span<const std::vector<std::vector<std::uint8_t>>> masks,
                         std::span<const std::int32_t> positions, std::span<const std::uint8_t> mask,
                         ForwardProbes* probes);
    KvCache& sequence_cache(std::int64_t b) { return b == 0 ? cache_ : extra_caches_[std::size_t(b - 1)]; }
    // Points layer l's attention probe at what `probes` asks for, and at
    // received_ when the cache tracks received mass and no probe wants it.
    void wire_probe(std::int64_t l, std::int64_t n, ForwardProbes* probes, AttentionProbe& probe);
    // Adds the mass the probe collected to each slot's running total.
    void add_received(std::int64_t l, const AttentionProbe& probe);

    std::shared_ptr<const Model> model_;
    Context& ctx_;
    KvCache cache_;
    std::vector<KvCache> extra_caches_;  // sequences 1.. of a forward with sequence_masks, made on first use
    std::int64_t next_position_ = 0;
    std::int64_t last_rows_ = 0;  // rows of the last forward (for keep_rows)
    std::vector<std::vector<std::uint8_t>> head_off_;
    std::vector<double> inv_freq_;  // [head_dim/2]
    std::int64_t inv_freq_length_ = -1;  // sequence length inv_freq_ was made for (dynamic rope)

    AttentionWorkspace attention_ws_;
    // rows: the new rows of every sequence, sequence after sequence (padded_rows(B·n)).
    Buffer<float> x_;        // [rows, d_model] residual stream
    Buffer<float> xn_;       // [rows, d_model] normalized
    Buffer<float> qkv_;      // [rows, (n_heads_l + 2·n_kv_heads_l)·head_dim]
    Buffer<float> attn_;     // [rows, n_heads_l·head_dim]
    Buffer<float> gate_up_;  // [rows, 2·d_ff]
    Buffer<float> ffn_;      // [rows, d_ff]
    Buffer<float> logits_;   // [rows, vocab_size]
    Buffer<float> cos_, sin_;  // [n, head_dim/2]
    Buffer<std::int32_t> positions_;  // [n]
    Buffer<float> received_;          // [n_kv_heads_l, slots] a step's received mass, when the cache tracks it
    std::vector<KvHeadView> views_;
};

}  // namespace heads
