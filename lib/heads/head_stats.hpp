#pragma once
// Per-head attention statistics over many sequences, accumulated inside the
// attention pass (no seq_len × seq_len matrix is kept), and the head table
// they make: entropy, sink, prev_token, induction, echo (definitions in
// attention/attention.hpp and man/heads.7; the same as scripts/reference.py).

#include <cstdint>
#include <span>
#include <string_view>
#include <vector>

#include "attention/attention.hpp"
#include "heads/head_table.hpp"
#include "model/session.hpp"

namespace heads {

class HeadStats {
public:
    explicit HeadStats(const LlamaConfig& config);

    // Runs one sequence from an empty cache and adds its statistics.
    void add_sequence(Session& session, std::span<const std::int32_t> tokens);

    // The comment line says the scores were made by `made_by` (a program and its options).
    HeadTable table(const Model& model, std::string_view made_by = "infer --head-stats") const;

private:
    std::vector<std::vector<HeadStatSums>> sums_;  // [n_layers][n_heads_l]
    std::int64_t sequences_ = 0, repeats_ = 0;
};

}  // namespace heads
