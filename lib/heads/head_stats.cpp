#include "heads/head_stats.hpp"

#include <cmath>

#include <fmt/format.h>

namespace heads {

HeadStats::HeadStats(const LlamaConfig& config) {
    for (const auto& layer : config.layers) sums_.emplace_back(std::size_t(layer.n_heads()));
}

void HeadStats::add_sequence(Session& session, std::span<const std::int32_t> tokens) {
    session.reset();
    ForwardProbes probes;
    probes.stats = &sums_;
    probes.tokens = tokens;
    ForwardRequest request;
    request.tokens = tokens;
    request.logits = LogitRows::none;
    request.probes = &probes;
    session.forward(request);
    ++sequences_;
    if (repeat_span(tokens) > 0) ++repeats_;
}

HeadTable HeadStats::table(const Model& model, std::string_view made_by) const {
    const LlamaConfig& c = model.config();
    HeadTable table;
    table.model = model.fingerprint();
    table.columns = {"entropy", "sink", "prev_token", "induction", "echo"};
    std::int64_t queries = 0, repeat_queries = 0;
    for (const auto& layer : sums_)
        if (!layer.empty()) {
            queries = layer[0].queries;
            repeat_queries = layer[0].repeat_queries;
            break;
        }
    table.comments.push_back(fmt::format(
        "{}: {} sequences, {} queries, {} repeat sequences ({} second-copy queries); "
        "entropy in nats, the rest attention mass; means over queries",
        made_by, sequences_, queries, repeats_, repeat_queries));
    auto mean = [](double sum, std::int64_t count) { return count > 0 ? sum / double(count) : NAN; };
    for (std::int64_t l = 0; l < c.n_layers; ++l)
        for (std::size_t h = 0; h < sums_[std::size_t(l)].size(); ++h) {
            const HeadStatSums& s = sums_[std::size_t(l)][h];
            const LayerHeads& heads = c.layers[std::size_t(l)];
            table.rows.push_back({l, heads.query_head_ids[h], heads.kv_head_ids[std::size_t(heads.kv_head_of[h])],
                                  {mean(s.entropy, s.queries), mean(s.sink, s.queries), mean(s.prev_token, s.prev_queries),
                                   mean(s.induction, s.repeat_queries), mean(s.echo, s.repeat_queries)}});
        }
    return table;
}

}  // namespace heads
