#include "model/session.hpp"

#include <algorithm>
#include <cmath>
#include <limits>
#include <cstring>

#include "ops/activation.hpp"
#include "ops/norm.hpp"
#include "ops/rope.hpp"
#include "tensor/error.hpp"

namespace heads {
namespace {

// Whether every value is a finite number. Without a branch in the loop, so
// that it vectorizes: a scan of each layer's output costs little beside the
// layer's matmuls, and NaN weights or KV entries must stop the forward pass
// with a message, not write "0 0 0 ..." as if all were well.
bool all_finite(const float* data, std::int64_t count) {
    bool finite = true;
    for (std::int64_t i = 0; i < count; ++i) finite &= std::fabs(data[i]) <= std::numeric_limits<float>::max();
    return finite;
}

std::vector<std::int64_t> kv_head_counts(const LlamaConfig& c) {
    std::vector<std::int64_t> kv;
    for (const auto& layer : c.layers) kv.push_back(layer.n_kv_heads());
    return kv;
}

// One row of the fused QKV projection (LayerWeights::qkv), head_dim floats per head:
//   [ q_0 ... q_{n_heads_l - 1} | k_0 ... k_{n_kv_heads_l - 1} | v_0 ... v_{n_kv_heads_l - 1} ]
struct QkvLayout {
    std::int64_t n_heads, n_kv_heads, head_dim;  // of one layer
    QkvLayout(const LayerHeads& heads, std::int64_t head_dim)
        : n_heads(heads.n_heads()), n_kv_heads(heads.n_kv_heads()), head_dim(head_dim) {}
    std::int64_t width() const { return (n_heads + 2 * n_kv_heads) * head_dim; }
    std::int64_t q(std::int64_t h) const { return h * head_dim; }                   // query head h
    std::int64_t k(std::int64_t g) const { return (n_heads + g) * head_dim; }        // key of KV head g
    std::int64_t v(std::int64_t g) const { return (n_heads + n_kv_heads + g) * head_dim; }  // its value
};

// The widest layer's fused QKV row and attention output row: the widths of
// the buffers all layers share.
struct WidestLayer {
    std::int64_t qkv = 0, attn = 0;
};

WidestLayer widest_layer(const LlamaConfig& c) {
    WidestLayer widest;
    for (const auto& heads : c.layers) {
        widest.qkv = std::max(widest.qkv, QkvLayout(heads, c.head_dim).width());
        widest.attn = std::max(widest.attn, heads.n_heads() * c.head_dim);
    }
    widest.attn = std::max<std::int64_t>(widest.attn, 1);  // a layer without heads still gets a buffer
    return widest;
}

void zero_rows(float* data, std::int64_t from, std::int64_t to, std::int64_t width) {
    if (to > from) std::memset(data + from * width, 0, sizeof(float) * std::size_t((to - from) * width));
}

bool contains(const std::vector<std::int64_t>& list, std::int64_t value) {
    return std::find(list.begin(), list.end(), value) != list.end();
}

void check_head_mask(const LlamaConfig& c, const std::vector<std::vector<std::uint8_t>>& off) {
    if (std::int64_t(off.size()) != c.n_layers) throw Error("head mask for {} layers, the model has {}", off.size(), c.n_layers);
    for (std::int64_t l = 0; l < c.n_layers; ++l)
        if (std::int64_t(off[std::size_t(l)].size()) != c.layers[std::size_t(l)].n_heads())
            throw Error("head mask for {} heads in layer {}, which has {}", off[std::size_t(l)].size(), l,
                        c.layers[std::size_t(l)].n_heads());
}

}  // namespace

Session::Session(std::shared_ptr<const Model> model, Context& ctx, const SessionOptions& options)
    : model_(std::move(model)), ctx_(ctx) {
    const LlamaConfig& c = model_->config();
    const std::int64_t capacity = options.capacity > 0 ? options.capacity : std::min<std::int64_t>(c.max_seq_len, 4096);
    cache_ = KvCache(kv_head_counts(c), c.head_dim, capacity, options.kv_type.value_or(default_kv_type(*model_, ctx_)));
    for (const auto& layer : c.layers) head_off_.emplace_back(std::size_t(layer.n_heads()), 0);
    inv_freq_.resize(std::size_t(c.head_dim / 2));
}

void Session::reserve(std::int64_t n, std::int64_t sequences, LogitRows logits) {
    const LlamaConfig& c = model_->config();
    const std::size_t rows = std::size_t(padded_rows(sequences * n)), d = std::size_t(c.d_model);
    const WidestLayer widest = widest_layer(c);
    x_.reserve(rows * d);
    xn_.reserve((rows + std::size_t(kRowBucket)) * d);  // + a bucket: logits_from shifts the rows read
    qkv_.reserve(rows * std::size_t(widest.qkv));
    attn_.reserve(rows * std::size_t(widest.attn));
    gate_up_.reserve(rows * std::size_t(2 * c.d_ff));
    ffn_.reserve(rows * std::size_t(c.d_ff));
    if (logits != LogitRows::none)
        logits_.reserve((logits == LogitRows::all ? rows : std::size_t(padded_rows(sequences))) * std::size_t(c.vocab_size));
    cos_.reserve(std::size_t(n * c.head_dim / 2));
    sin_.reserve(std::size_t(n * c.head_dim / 2));
    positions_.reserve(std::size_t(n));
    views_.reserve(std::size_t(c.max_layer_kv_heads()));
    while (std::int64_t(extra_caches_.size()) + 1 < sequences)
        extra_caches_.emplace_back(kv_head_counts(c), c.head_dim, 0, cache_.start_type());
    for (std::int64_t b = 0; b < sequences; ++b) sequence_cache(b).reserve_more(n);
}

std::int64_t Session::bytes_per_row(LogitRows logits) const {
    const LlamaConfig& c = model_->config();
    const WidestLayer widest = widest_layer(c);
    // As reserve() sizes them: x, xn, qkv, attn, gate_up, ffn, and logits.
    const std::int64_t floats = 2 * c.d_model + widest.qkv + widest.attn + 3 * c.d_ff +
                                (logits == LogitRows::all ? c.vocab_size : 0);
    std::int64_t kv_heads = 0;
    for (const auto& layer : c.layers) kv_heads += layer.n_kv_heads();
    return floats * std::int64_t(sizeof(float)) + kv_heads * slot_bytes(cache_.start_type(), c.head_dim);
}

ForwardResult Session::forward(const ForwardRequest& request) {
    const LlamaConfig& c = model_->config();
    const std::int64_t n = std::int64_t(request.tokens.size()), d = c.d_model;
    if (n == 0) return {};
    for (auto token : request.tokens)
        if (token < 0 || token >= c.vocab_size)
            throw Error("token id {} is out of range (vocabulary of {})", token, c.vocab_size);
    if (!request.positions.empty() && std::int64_t(request.positions.size()) != n)
        throw Error("{} positions for {} new tokens", request.positions.size(), n);
    if (!request.mask.empty() && std::int64_t(request.mask.size()) != n * n)
        throw Error("an attention mask of {} entries for {} new tokens (needs {})", request.mask.size(), n, n * n);

    if (request.first_layer < 0 || request.first_layer >= c.n_layers)
        throw Error("first layer {} is not a layer of the model (0 to {})", request.first_layer, c.n_layers - 1);
    if (request.first_layer > 0 && std::int64_t(request.residual.size()) != n * d)
        throw Error("a residual of {} values for {} new tokens entering layer {} (needs {})", request.residual.size(), n,
                    request.first_layer, n * d);
    const auto masks = request.sequence_masks;
    const std::int64_t sequences = std::max<std::int64_t>(std::int64_t(masks.size()), 1);
    if (!masks.empty()) {
        if (request.probes || request.final_hidden || cache_.tracks_received())
            throw Error("several sequences in one forward cannot take probes, final hidden states or received mass");
        for (const auto& off : masks) check_head_mask(c, off);
    }
    const std::int64_t all = sequences * n;  // rows of every sequence, stacked

    reserve(n, sequences, request.logits);
    // The sequences share positions, so their caches must have gone on
    // together since reset(); truncate, keep_rows, fork and the like see
    // only sequence 0's.
    for (std::int64_t b = 1; b < sequences; ++b)
        if (sequence_cache(b).total_slots() != cache_.total_slots())
            throw Error("sequence {}'s KV cache holds {} slots where sequence 0's holds {}: several sequences go on "
                        "together from a reset session",
                        b, sequence_cache(b).total_slots(), cache_.total_slots());
    const std::int64_t rows = padded_rows(all);
    std::int32_t* positions = positions_.data();
    std::int64_t longest = 0;
    for (std::int64_t i = 0; i < n; ++i) {
        positions[i] = request.positions.empty() ? std::int32_t(next_position_ + i) : request.positions[std::size_t(i)];
        if (positions[i] < 0) throw Error("position {} of new token {} is negative", positions[i], i);
        longest = std::max<std::int64_t>(longest, positions[i] + 1);
    }
    const std::span<const std::int32_t> position_span(positions, std::size_t(n));

    // RoPE angles; "dynamic" scaling depends on the longest position, as in transformers.
    const std::int64_t rope_length = c.rope.scaling.type == RopeScalingType::dynamic ? longest : 0;
    if (rope_length != inv_freq_length_) {
        rope_inv_freq(inv_freq_, c.rope, std::max<std::int64_t>(rope_length, 1));
        inv_freq_length_ = rope_length;
    }
    rope_tables(cos_.data(), sin_.data(), position_span, inv_freq_);

    float* x = x_.data();
    if (request.first_layer > 0) {
        std::copy(request.residual.begin(), request.residual.end(), x);
    } else {
        for (std::int64_t i = 0; i < n; ++i) model_->embed(x + i * d, request.tokens[std::size_t(i)]);
        if (!all_finite(x, n * d)) throw Error("the embeddings of these tokens hold NaN or infinity");
    }
    for (std::int64_t b = 1; b < sequences; ++b) std::copy(x, x + n * d, x + b * n * d);
    // The rows matmul pads to are inputs too: keep them zero.
    zero_rows(x, all, rows, d);
    zero_rows(xn_.data(), all, rows + kRowBucket, d);
    zero_rows(ffn_.data(), all, rows, c.d_ff);
    zero_rows(attn_.data(), all, rows, c.max_layer_heads() * c.head_dim);

    ForwardProbes* probes = request.probes;
    if (probes) {
        probes->hidden.clear();
        probes->attention.clear();
        probes->key_slots.assign(std::size_t(c.n_layers), 0);
        probes->received_all.assign(std::size_t(c.n_layers), {});
        probes->received_recent.assign(std::size_t(c.n_layers), {});
    }
    auto keep_hidden = [&](std::int64_t index, const float* from) {
        if (probes && contains(probes->hidden_layers, index)) probes->hidden[index].assign(from, from + n * d);
    };

    const float eps = float(c.rms_norm_eps);
    for (std::int64_t l = request.first_layer; l < c.n_layers; ++l) {
        const LayerWeights& w = model_->layer(l);
        // x = x + attention(rms_norm(x, attn_norm))         (reference.py forward)
        rms_norm({.y = xn_.data(), .x = x, .weight = w.attn_norm.data(), .rows = all, .d_model = d, .eps = eps});
        if (c.layers[std::size_t(l)].n_heads() > 0) attention_layer(l, n, masks, position_span, request.mask, probes);
        // h = rms_norm(x, mlp_norm)
        rms_norm({.y = xn_.data(), .x = x, .weight = w.ffn_norm.data(), .rows = all, .d_model = d, .eps = eps});
        // x = x + w_down(silu(w_gate(h)) * w_up(h)), gate and up in one matmul
        matmul(ctx_, {.y = gate_up_.data(), .x = xn_.data(), .rows = all}, w.gate_up);
        swiglu(ffn_.data(), gate_up_.data(), all, c.d_ff);
        matmul(ctx_, {.y = x, .x = ffn_.data(), .rows = all, .accumulate = true}, w.down);
        keep_hidden(l, x);
        if (!all_finite(x, all * d))
            throw Error("layer {}: the hidden state became NaN or infinite (non-finite weights or KV cache)", l);
    }

    ForwardResult result;
    const bool all_rows = request.final_hidden || request.logits == LogitRows::all;
    // logits = lm_head(rms_norm(x, final_norm)), of the rows asked for
    const float* final_norm = model_->final_norm().data();
    if (all_rows)
        rms_norm({.y = xn_.data(), .x = x, .weight = final_norm, .rows = all, .d_model = d, .eps = eps});
    else if (request.logits == LogitRows::last)  // each sequence's last row, one after another
        for (std::int64_t b = 0; b < sequences; ++b)
            rms_norm({.y = xn_.data() + b * d, .x = x + (b * n + n - 1) * d, .weight = final_norm, .rows = 1,
                      .d_model = d, .eps = eps});
    if (request.final_hidden) result.hidden = {xn_.data(), std::size_t(n * d)};
    if (request.logits == LogitRows::all) {
        const std::int64_t from = std::clamp<std::int64_t>(request.logits_from, 0, n - 1), kept = n - from;
        // Several sequences: each one's rows from..n-1 moved together, so lm_head too reads its matrix once.
        for (std::int64_t b = 1; b < sequences; ++b)
            std::memmove(xn_.data() + (from + b * kept) * d, xn_.data() + (b * n + from) * d,
                         sizeof(float) * std::size_t(kept * d));
        matmul(ctx_, {.y = logits_.data(), .x = xn_.data() + from * d, .rows = sequences * kept}, model_->lm_head());
        result.logits = {logits_.data(), std::size_t(sequences * kept * c.vocab_size)};
    } else if (request.logits == LogitRows::last) {
        const float* last = xn_.data() + (all_rows ? (n - 1) * d : 0);
        matmul(ctx_, {.y = logits_.data(), .x = last, .rows = sequences}, model_->lm_head());
        result.logits = {logits_.data(), std::size_t(sequences * c.vocab_size)};
    }
    if (!all_finite(result.logits.data(), std::int64_t(result.logits.size())))
        throw Error("the logits are NaN or infinite (non-finite final norm or lm_head weights)");
    last_rows_ = n;
    next_position_ = std::max(next_position_, longest);
    return result;
}

void Session::attention_layer(std::int64_t l, std::int64_t n,
                              std::span<const std::vector<std::vector<std::uint8_t>>> masks,
                              std::span<const std::int32_t> positions, std::span<const std::uint8_t> mask,
                              ForwardProbes* probes) {
    const LlamaConfig& c = model_->config();
    const LayerHeads& heads = c.layers[std::size_t(l)];
    const LayerWeights& w = model_->layer(l);
    const std::int64_t head_dim = c.head_dim;
    const QkvLayout row(heads, head_dim);
    const std::int64_t sequences = std::max<std::int64_t>(std::int64_t(masks.size()), 1);
    float* qkv = qkv_.data();  // [sequences · n, row.width()]

    // q, k, v = wq(x), wk(x), wv(x), in one matmul       (reference.py _attention)
    matmul(ctx_, {.y = qkv, .x = xn_.data(), .rows = sequences * n}, w.qkv);
    for (std::int64_t b = 0; b < sequences; ++b) {
        float* seq_qkv = qkv + b * n * row.width();  // this sequence's rows
        float* seq_out = attn_.data() + b * n * row.n_heads * head_dim;
        KvCache& cache = sequence_cache(b);
        // q, k = apply_rope(q, cos, sin), apply_rope(k, cos, sin)
        rope_apply({.x = seq_qkv + row.q(0), .rows = n, .row_stride = row.width(), .n_heads = row.n_heads,
                    .head_dim = head_dim, .cos = cos_.data(), .sin = sin_.data()});
        rope_apply({.x = seq_qkv + row.k(0), .rows = n, .row_stride = row.width(), .n_heads = row.n_kv_heads,
                    .head_dim = head_dim, .cos = cos_.data(), .sin = sin_.data()});
        // The new keys and values join the cache: the keys attention sees are past + new.
        views_.clear();
        for (std::int64_t g = 0; g < row.n_kv_heads; ++g) {
            cache.append(l, g, seq_qkv + row.k(g), seq_qkv + row.v(g), row.width(), positions);
            views_.push_back(cache.view(l, g));
        }

        // heads_out = softmax(q·kᵀ/sqrt(head_dim) + mask)·v per query head, masked heads zeroed
        AttentionArgs args{.out = seq_out,
                           .out_stride = row.n_heads * head_dim,
                           .q = seq_qkv + row.q(0),
                           .q_stride = row.width(),
                           .n_new = n,
                           .head_dim = head_dim,
                           .kv_head_of = heads.kv_head_of,
                           .kv = views_,
                           .positions = positions,
                           .mask = mask.empty() ? nullptr : mask.data(),
                           .sliding_window = c.sliding_window,
                           .head_off = (masks.empty() ? head_off_ : masks[std::size_t(b)])[std::size_t(l)]};
        wire_probe(l, n, probes, args.probe);
        attention(ctx_, attention_ws_, args);
        if (cache.tracks_received()) add_received(l, args.probe);
    }
    // x = x + wo(heads_out): the residual add
    matmul(ctx_, {.y = x_.data(), .x = attn_.data(), .rows = sequences * n, .accumulate = true}, w.o);
}

void Session::wire_probe(std::int64_t l, std::int64_t n, ForwardProbes* probes, AttentionProbe& probe) {
    const LayerHeads& heads = model_->config().layers[std::size_t(l)];
    const std::int64_t n_heads = heads.n_heads(), n_kv_heads = heads.n_kv_heads();
    const std::int64_t key_slots = cache_.max_slots(l);
    if (probes) {
        probes->key_slots[std::size_t(l)] = key_slots;
        if (contains(probes->attention_layers, l)) {
            auto& probs = probes->attention[l];
            probs.assign(std::size_t(n_heads * n * key_slots), 0.0f);
            probe.probs = probs.data();
            probe.key_stride = key_slots;
        }
        if (probes->received) {
            probes->received_all[std::size_t(l)].assign(std::size_t(n_kv_heads * key_slots), 0.0f);
            probes->received_recent[std::size_t(l)].assign(std::size_t(n_kv_heads * key_slots), 0.0f);
            probe.received = probes->received_all[std::size_t(l)].data();
            probe.received_recent = probes->received_recent[std::size_t(l)].data();
            probe.slot_stride = key_slots;
            probe.recent_queries = probes->recent_queries;
        }
        if (probes->stats) {
            auto& sums = (*probes->stats)[std::size_t(l)];
            sums.resize(std::size_t(n_heads));
            probe.stats = sums.data();
            probe.tokens = probes->tokens;
        }
    }
    // The step's mass, for add_received: from every query, or from the cache's window of last queries.
    const std::int64_t window = cache_.received_window();
    if (cache_.tracks_received() && !(window > 0 ? probe.received_recent : probe.received)) {
        received_.reserve(std::size_t(n_kv_heads * key_slots));
        std::fill(received_.data(), received_.data() + n_kv_heads * key_slots, 0.0f);
        (window > 0 ? probe.received_recent : probe.received) = received_.data();
        if (window > 0) probe.recent_queries = window;
        probe.slot_stride = key_slots;
    }
}

void Session::add_received(std::int64_t l, const AttentionProbe& probe) {
    for (std::int64_t g = 0; g < cache_.n_kv_heads(l); ++g) {
        KvHead& head = cache_.head(l, g);
        const float* mass = (cache_.received_window() > 0 ? probe.received_recent : probe.received) + g * probe.slot_stride;
        for (std::int64_t s = 0; s < head.slots; ++s) head.received.data()[s] += mass[s];
    }
}

SlotType default_kv_type(const Model& model, Context& ctx) {
    const bool bf16 = compute_of(model.weight_format()) == ComputeType::bf16 && ctx.bf16_arithmetic();
    return bf16 ? SlotType::bf16 : SlotType::f32;
}

void check_kv_frame(const Model& model, const KvFrameContents& frame, const std::string& where) {
    if (frame.info.model != model.fingerprint())
        throw Error("{}: the KV frame is from model {}, not from this model ({}, {})", where, frame.info.model,
                    model.fingerprint(), model.dir().string());
    if (frame.cache.kv_head_counts() != kv_head_counts(model.config()))
        throw Error("{}: the KV frame's KV heads per layer differ from the model's", where);
    if (frame.cache.head_dim() != model.config().head_dim && frame.cache.total_slots() > 0)
        throw Error("{}: the KV frame has head_dim {}, the model {}", where, frame.cache.head_dim(), model.config().head_dim);
}

void Session::load_cache(const KvFrameContents& frame, const std::string& where) {
    check_kv_frame(*model_, frame, where);
    cache_.copy_from(frame.cache);
    const std::int64_t top = cache_.max_position() + 1;
    next_position_ = std::max<std::int64_t>(std::int64_t(frame.info.tokens.size()), top);
    last_rows_ = 0;
}

void Session::reset() {
    cache_.clear();
    for (auto& cache : extra_caches_) cache.clear();
    next_position_ = 0;
    last_rows_ = 0;
}

void Session::truncate(std::int64_t n) {
    cache_.truncate(n);
    next_position_ = std::min(next_position_, n);
    last_rows_ = 0;
}

void Session::keep_rows(std::span<const std::int64_t> rows) {
    for (std::size_t r = 0; r < rows.size(); ++r)
        if (rows[r] < 0 || rows[r] >= last_rows_ || (r > 0 && rows[r] <= rows[r - 1]))
            throw Error("keep_rows: rows must ascend within the {} rows of the last forward", last_rows_);
    std::vector<std::int64_t> keep;
    std::int64_t first_dropped = -1;
    for (std::int64_t l = 0; l < cache_.n_layers(); ++l)
        for (std::int64_t g = 0; g < cache_.n_kv_heads(l); ++g) {
            const KvHead& head = cache_.head(l, g);
            const std::int64_t base = head.slots - last_rows_;
            if (first_dropped < 0 && last_rows_ > 0) first_dropped = head.pos.data()[base];
            keep.clear();
            for (std::int64_t s = 0; s < base; ++s) keep.push_back(s);
            for (auto r : rows) keep.push_back(base + r);
            cache_.keep(l, g, keep);
        }
    const std::int32_t top = cache_.max_position();
    next_position_ = rows.empty() && first_dropped >= 0 ? first_dropped : top + 1;
    last_rows_ = 0;
}

void Session::set_head_mask(std::vector<std::vector<std::uint8_t>> off) {
    check_head_mask(model_->config(), off);
    head_off_ = std::move(off);
}

std::unique_ptr<Session> Session::fork() const {
    SessionOptions options{.kv_type = cache_.start_type()};
    for (std::int64_t l = 0; l < cache_.n_layers(); ++l) options.capacity = std::max(options.capacity, cache_.max_slots(l));
    options.capacity = std::max<std::int64_t>(options.capacity, 1);
    auto copy = std::make_unique<Session>(model_, ctx_, options);
    copy->copy_from(*this);
    return copy;
}

void Session::copy_from(const Session& other) {
    if (other.model_ != model_) throw Error("copy_from: sessions of different models");
    cache_.copy_from(other.cache_);
    next_position_ = other.next_position_;
    last_rows_ = other.last_rows_;
    head_off_ = other.head_off_;
}

}  // namespace heads
