// libFuzzer target: arbitrary bytes through the parsers of what prune-heads
// reads, chosen by the first byte: a list of heads (--heads, --mask-heads),
// a head table (--scores), and config.json with its head_layout. A hostile
// input may only ever raise heads::Error; what parses must survive a round
// trip (the head table written and read back, the layout written with
// head_layout_json and parsed again) and describe a consistent layout.

#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <string_view>

#include <nlohmann/json.hpp>

#include "fuzz_check.hpp"
#include "heads/head_list.hpp"
#include "heads/head_table.hpp"
#include "model/config.hpp"
#include "tensor/error.hpp"

namespace {

using heads::fuzz::check;

void head_list(std::string_view text) {
    if (!text.empty() && text.front() == '@') return;  // @FILE reads a file: not the parser's input
    for (const auto& ref : heads::parse_head_list(text))
        check(ref.layer >= 0 && ref.head >= 0, "a head list gave a negative layer or head");
}

bool same(const heads::HeadTable& a, const heads::HeadTable& b) {
    if (a.model != b.model || a.columns != b.columns || a.rows.size() != b.rows.size()) return false;
    for (std::size_t i = 0; i < a.rows.size(); ++i) {
        const auto &x = a.rows[i], &y = b.rows[i];
        if (x.layer != y.layer || x.head != y.head || x.kv_head != y.kv_head || x.values.size() != y.values.size())
            return false;
        for (std::size_t j = 0; j < x.values.size(); ++j)  // written with 6 decimals
            if (std::isnan(x.values[j]) != std::isnan(y.values[j]) ||
                (!std::isnan(x.values[j]) && std::abs(x.values[j] - y.values[j]) > 5e-7 * std::max(1.0, std::abs(x.values[j]))))
                return false;
    }
    return true;
}

void head_table(std::string_view text) {
    const heads::HeadTable table = heads::parse_head_table(text, "fuzz");
    for (const auto& row : table.rows) {
        check(row.layer >= 0 && row.head >= 0 && row.kv_head >= 0 && row.values.size() == table.columns.size(),
              "a head table row has a negative number or not one value per column");
        for (const double value : row.values)
            if (std::isinf(value) || std::abs(value) > 1e15) return;  // beyond what 6 decimals carry back
    }
    for (const auto& column : table.columns)
        if (column.find_first_of("\n\r") != std::string::npos) return;
    for (const auto& comment : table.comments)
        if (comment.find_first_of("\n\r") != std::string::npos) return;
    if (table.model.find_first_of("\n\r") != std::string::npos) return;
    char* buffer = nullptr;
    std::size_t size = 0;
    std::FILE* out = open_memstream(&buffer, &size);
    heads::write_head_table(out, table);
    std::fclose(out);
    const std::string written(buffer, size);
    std::free(buffer);
    check(same(table, heads::parse_head_table(written, "written")), "the written head table parses back to another table");
}

void config(std::string_view text) {
    // parse_config allocates a layout of num_hidden_layers × num_attention_heads entries: keep those
    // within what a model may have, or the fuzzer only finds the allocator's limit.
    const auto json = nlohmann::json::parse(text, nullptr, false);
    if (json.is_discarded() || !json.is_object()) return;
    for (const char* key : {"num_hidden_layers", "num_attention_heads", "num_key_value_heads"})
        if (json.contains(key) && json[key].is_number() && json[key].get<double>() > 4096) return;
    const heads::LlamaConfig c = heads::parse_config(text, "fuzz");
    check(std::int64_t(c.layers.size()) == c.n_layers, "a layout of another number of layers");
    for (const auto& layer : c.layers) {
        check(layer.kv_head_of.size() == layer.query_head_ids.size(), "kv_head_of is not one per query head");
        for (const auto g : layer.kv_head_of)
            check(g >= 0 && g < layer.n_kv_heads(), "kv_head_of names no KV head of the layer");
        for (const auto id : layer.query_head_ids)
            check(id >= 0 && id < c.n_heads_unpruned, "a query head id out of range");
        for (const auto id : layer.kv_head_ids)
            check(id >= 0 && id < c.n_kv_heads_unpruned, "a KV head id out of range");
    }
    // The layout written as prune-heads writes it parses back the same.
    nlohmann::json written = json;
    written["head_layout"] = nlohmann::json::parse(heads::head_layout_json(c.layers));
    const heads::LlamaConfig again = heads::parse_config(written.dump(), "written");
    for (std::size_t l = 0; l < c.layers.size(); ++l)
        check(again.layers[l].query_head_ids == c.layers[l].query_head_ids &&
                  again.layers[l].kv_head_ids == c.layers[l].kv_head_ids &&
                  again.layers[l].kv_head_of == c.layers[l].kv_head_of,
              "the written head_layout parses back to another layout");
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    if (size == 0) return 0;
    const std::string_view text(reinterpret_cast<const char*>(data) + 1, size - 1);
    try {
        switch (data[0] % 3) {
        case 0: head_list(text); break;
        case 1: head_table(text); break;
        default: config(text); break;
        }
    } catch (const heads::Error&) {
    }
    return 0;
}
