#include "heads/retrieval.hpp"

#include <algorithm>

#include "ops/activation.hpp"
#include "sampling/rng.hpp"
#include "tensor/error.hpp"

namespace heads {
namespace {

// Uniform in [0, n).
std::int64_t below(sampling::Rng& rng, std::int64_t n) {
    return std::min(n - 1, std::int64_t(rng.uniform() * double(n)));
}

struct CopyPrompt {
    std::vector<std::int32_t> tokens;  // BOS, text, needle inside it, cue
    std::int64_t needle_begin = 0;     // the needle's positions: [needle_begin, needle_begin + needle.size())
    std::vector<std::int32_t> needle;
};

// Prompt p: its own stream of the seed, so it does not depend on the others.
CopyPrompt copy_prompt(const RetrievalOptions& o, std::int64_t p, std::span<const std::int32_t> text,
                       std::vector<std::int32_t> pieces, std::int64_t n_text, std::int32_t bos) {
    sampling::Rng rng(o.seed, std::uint64_t(p));
    const std::int64_t start = below(rng, std::int64_t(text.size()) - n_text + 1);
    const std::int64_t at = below(rng, n_text + 1);  // text tokens before the needle
    const auto stretch = text.subspan(std::size_t(start), std::size_t(n_text));
    for (std::size_t i = 0; i + 1 < pieces.size(); ++i)  // a shuffle
        std::swap(pieces[i], pieces[i + std::size_t(below(rng, std::int64_t(pieces.size() - i)))]);
    // Pieces the stretch does not hold first: a cue piece that occurs once is
    // followed by one next piece, which is what a copy must find.
    std::stable_partition(pieces.begin(), pieces.end(), [&](std::int32_t piece) {
        return std::find(stretch.begin(), stretch.end(), piece) == stretch.end();
    });
    CopyPrompt prompt;
    prompt.needle.assign(pieces.begin(), pieces.begin() + o.needle);
    prompt.needle_begin = 1 + at;
    prompt.tokens.push_back(bos);
    prompt.tokens.insert(prompt.tokens.end(), stretch.begin(), stretch.begin() + at);
    prompt.tokens.insert(prompt.tokens.end(), prompt.needle.begin(), prompt.needle.end());
    prompt.tokens.insert(prompt.tokens.end(), stretch.begin() + at, stretch.end());
    prompt.tokens.insert(prompt.tokens.end(), prompt.needle.begin(), prompt.needle.begin() + o.cue);
    return prompt;
}

}  // namespace

RetrievalResult retrieval_scores(Session& session, std::span<const std::int32_t> tokens, const RetrievalOptions& o) {
    const Model& model = session.model();
    const LlamaConfig& c = model.config();
    if (o.prompts < 1 || o.cue < 1 || o.needle <= o.cue)
        throw Error("retrieval: {} prompts, a needle of {} and a cue of {} make no copy", o.prompts, o.needle, o.cue);
    // BOS or EOS inside a prompt would start or end the sequence there.
    std::vector<std::int32_t> text;
    for (const std::int32_t t : tokens)
        if (t != c.bos_token_id && t != c.eos_token_id) text.push_back(t);
    std::vector<std::int32_t> pieces = text;
    std::sort(pieces.begin(), pieces.end());
    pieces.erase(std::unique(pieces.begin(), pieces.end()), pieces.end());
    if (std::int64_t(pieces.size()) < o.needle)
        throw Error("retrieval: the calibration tokens hold {} distinct pieces; its needle needs {}", pieces.size(),
                    o.needle);
    const std::int64_t n_text = std::min<std::int64_t>(o.text, std::int64_t(text.size()));
    const std::int64_t copy = o.needle - o.cue;                            // greedy steps per prompt
    const std::int64_t length = 1 + n_text + o.needle + o.cue + copy - 1;  // the last token generated is not run
    if (length > model.context_length())
        throw Error("retrieval: its copy prompts need {} positions, the model's context is {}", length,
                    model.context_length());

    RetrievalResult result;
    ForwardProbes probes;
    for (std::int64_t l = 0; l < c.n_layers; ++l) {
        result.score.emplace_back(std::size_t(c.layers[std::size_t(l)].n_heads()), 0.0);
        probes.attention_layers.push_back(l);
    }
    std::vector<std::vector<std::int64_t>> hits(result.score.size());
    for (std::int64_t p = 0; p < o.prompts; ++p) {
        const CopyPrompt prompt = copy_prompt(o, p, text, pieces, n_text, c.bos_token_id);
        std::vector<std::int32_t> sequence = prompt.tokens;  // token at each position
        for (std::size_t l = 0; l < hits.size(); ++l) hits[l].assign(result.score[l].size(), 0);
        session.reset();
        ForwardRequest request;
        request.tokens = prompt.tokens;
        request.logits = LogitRows::last;
        request.probes = &probes;
        std::int32_t next = 0;
        for (std::int64_t step = 0; step < copy; ++step) {
            next = argmax(session.forward(request).logits);
            if (next == prompt.needle[std::size_t(o.cue + step)]) ++result.copied;
            const std::int64_t rows = std::int64_t(request.tokens.size());
            for (std::int64_t l = 0; l < c.n_layers; ++l) {
                const LayerHeads& heads = c.layers[std::size_t(l)];
                if (heads.n_heads() == 0) continue;
                // [n_heads, rows, key_slots]: the last row is the query that predicted `next`.
                const std::vector<float>& probs = probes.attention.at(l);
                const std::int64_t slots = probes.key_slots[std::size_t(l)];
                for (std::int64_t h = 0; h < heads.n_heads(); ++h) {
                    const std::span<const float> row(probs.data() + (h * rows + rows - 1) * slots, std::size_t(slots));
                    const std::int64_t slot = argmax(row);
                    const KvHead& kv = session.cache().head(l, heads.kv_head_of[std::size_t(h)]);
                    const std::int64_t position = kv.pos.data()[slot];
                    if (position >= prompt.needle_begin && position < prompt.needle_begin + o.needle &&
                        sequence[std::size_t(position)] == next)
                        ++hits[std::size_t(l)][std::size_t(h)];
                }
            }
            sequence.push_back(next);
            request.tokens = std::span<const std::int32_t>(&next, 1);
        }
        for (std::size_t l = 0; l < hits.size(); ++l)
            for (std::size_t h = 0; h < hits[l].size(); ++h) result.score[l][h] += double(hits[l][h]) / double(copy);
        result.steps += copy;
    }
    result.prompts = o.prompts;
    result.text = n_text;
    for (auto& layer : result.score)
        for (double& score : layer) score /= double(o.prompts);
    return result;
}

}  // namespace heads
