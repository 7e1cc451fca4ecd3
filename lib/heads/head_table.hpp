#pragma once
// The head table (man/heads.7): TSV with a header line
//   layer  head  kv_head  <score columns...>
// one row per head, named by original ids (LayerHeads::query_head_ids and
// kv_head_ids) so that tables join across pruning, values printed with 6 decimals ("nan" where undefined),
// after comment lines that start with '#': the first is "# model FINGERPRINT",
// the others say how the scores were made.

#include <cstdint>
#include <cstdio>
#include <filesystem>
#include <string>
#include <string_view>
#include <vector>

#include "heads/head_list.hpp"
#include "io/output.hpp"

namespace heads {

struct HeadTable {
    std::string model;                  // fingerprint of the model the scores belong to
    std::vector<std::string> comments;  // without the leading "# "
    std::vector<std::string> columns;   // score column names
    struct Row {
        std::int64_t layer = 0, head = 0, kv_head = 0;  // head and kv_head: original ids
        std::vector<double> values;     // one per column
    };
    std::vector<Row> rows;

    // Index of a score column; throws heads::Error naming the columns there are.
    std::size_t column(const std::string& name) const;
    // The k rows with the highest value in a column, best first (ties: lower
    // layer, then lower head; "nan" ranks last).
    std::vector<const Row*> top(const std::string& column, std::size_t k) const;
};

void write_head_table(const Sink& out, const HeadTable& table);
// Throws heads::Error "PATH:LINE: what is wrong".
HeadTable read_head_table(const std::filesystem::path& path);
// The same from the text of a table; `source` names it in errors.
HeadTable parse_head_table(std::string_view text, const std::string& source);
// The same for a table that must belong to the model with this fingerprint
// (a table that names no model is taken as is); throws heads::Error
// "PATH: the head table is from model X, not from this model (Y)".
HeadTable read_head_table(const std::filesystem::path& path, const std::string& fingerprint);

// The mask of the `k` heads ranked highest by a column (HeadTable::top),
// found in the model's layers by original id; throws heads::Error when k < 1,
// the column is missing or the model does not have a head of the table.
HeadMask top_heads_mask(const LlamaConfig& config, const HeadTable& table, const std::string& column, std::int64_t k);

}  // namespace heads
