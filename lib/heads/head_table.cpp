#include "heads/head_table.hpp"

#include <algorithm>
#include <charconv>
#include <cmath>

#include <fmt/format.h>
#include <fmt/ranges.h>

#include "io/number.hpp"
#include "io/output.hpp"
#include "io/read_file.hpp"
#include "tensor/error.hpp"
#include "tensor/quote.hpp"

namespace heads {
namespace {

std::vector<std::string> split_tabs(const std::string& line) {
    std::vector<std::string> fields;
    std::size_t start = 0;
    while (true) {
        const auto tab = line.find('\t', start);
        fields.push_back(line.substr(start, tab - start));
        if (tab == std::string::npos) return fields;
        start = tab + 1;
    }
}

std::string format_value(double value) { return std::isnan(value) ? "nan" : fmt::format("{:.6f}", value); }

}  // namespace

std::size_t HeadTable::column(const std::string& name) const {
    for (std::size_t i = 0; i < columns.size(); ++i)
        if (columns[i] == name) return i;
    std::string there;
    for (const auto& c : columns) there += (there.empty() ? "" : ", ") + c;
    throw Error("the head table has no column {} (it has {})", quote(name), there);
}

std::vector<const HeadTable::Row*> HeadTable::top(const std::string& name, std::size_t k) const {
    const std::size_t c = column(name);
    const auto value = [&](const Row& row) { return std::isnan(row.values[c]) ? -INFINITY : row.values[c]; };
    std::vector<const Row*> order;
    for (const auto& row : rows) order.push_back(&row);
    std::stable_sort(order.begin(), order.end(), [&](const Row* a, const Row* b) {
        if (value(*a) != value(*b)) return value(*a) > value(*b);
        if (a->layer != b->layer) return a->layer < b->layer;
        return a->head < b->head;
    });
    order.resize(std::min(k, order.size()));
    return order;
}

void write_head_table(const Sink& out, const HeadTable& table) {
    std::string text = fmt::format("# model {}\n", table.model);
    for (const auto& comment : table.comments) {
        text += "# ";
        text += comment;
        text += '\n';
    }
    text += "layer\thead\tkv_head";
    for (const auto& column : table.columns) {
        text += '\t';
        text += column;
    }
    text += "\n";
    for (const auto& row : table.rows) {
        text += fmt::format("{}\t{}\t{}", row.layer, row.head, row.kv_head);
        for (double value : row.values) {
            text += '\t';
            text += format_value(value);
        }
        text += "\n";
    }
    write_all(out, text);
}

HeadTable read_head_table(const std::filesystem::path& path) {
    return parse_head_table(read_file(path, "the head table"), path.string());
}

HeadTable parse_head_table(std::string_view text, const std::string& source) {
    HeadTable table;
    std::size_t number = 0;
    bool header = false;
    for (std::size_t start = 0; start < text.size();) {
        const std::size_t end = std::min(text.find('\n', start), text.size());
        const std::string line(text.substr(start, end - start));
        start = end + 1;
        ++number;
        const std::string where = fmt::format("{}:{}", source, number);
        if (line.empty()) continue;
        if (line[0] == '#') {
            const std::string comment = line.substr(line.size() > 1 && line[1] == ' ' ? 2 : 1);
            if (table.model.empty() && comment.rfind("model ", 0) == 0)
                table.model = comment.substr(6);
            else
                table.comments.push_back(comment);
            continue;
        }
        const auto fields = split_tabs(line);
        if (!header) {
            if (fields.size() < 3 || fields[0] != "layer" || fields[1] != "head" || fields[2] != "kv_head")
                throw Error("{}: the header line must start with layer, head, kv_head (tab-separated)", where);
            table.columns.assign(fields.begin() + 3, fields.end());
            header = true;
            continue;
        }
        if (fields.size() != table.columns.size() + 3)
            throw Error("{}: {} fields, the header has {}", where, fields.size(), table.columns.size() + 3);
        HeadTable::Row row;
        for (int i = 0; i < 3; ++i) {
            const auto& f = fields[std::size_t(i)];
            const auto value = parse_count(f);
            if (!value) throw Error("{}: {} is not a layer/head number", where, quote(f));
            (i == 0 ? row.layer : i == 1 ? row.head : row.kv_head) = *value;
        }
        for (std::size_t i = 3; i < fields.size(); ++i) {
            const auto& f = fields[i];
            double value = 0;
            if (f == "nan") {
                value = NAN;
            } else {
                const auto [end, error] = std::from_chars(f.data(), f.data() + f.size(), value);
                if (error != std::errc() || end != f.data() + f.size())
                    throw Error("{}: {} in column {} is not a number", where, quote(f), table.columns[i - 3]);
            }
            row.values.push_back(value);
        }
        table.rows.push_back(std::move(row));
    }
    if (!header) throw Error("{}: no header line (layer, head, kv_head, ...)", source);
    return table;
}

HeadTable read_head_table(const std::filesystem::path& path, const std::string& fingerprint) {
    HeadTable table = read_head_table(path);
    if (!table.model.empty() && table.model != fingerprint)
        throw Error("{}: the head table is from model {}, not from this model ({})", path.string(), table.model,
                    fingerprint);
    return table;
}

HeadMask top_heads_mask(const LlamaConfig& config, const HeadTable& table, const std::string& column, std::int64_t k) {
    if (k < 1) throw Error("the number of top heads must be at least 1, not {}", k);
    std::vector<HeadRef> heads;
    for (const HeadTable::Row* row : table.top(column, std::size_t(k))) {
        if (row->layer >= config.n_layers)
            throw Error("the head table's head {}.{} does not exist (the model has layers 0 to {})", row->layer,
                        row->head, config.n_layers - 1);
        const auto& ids = config.layers[std::size_t(row->layer)].query_head_ids;
        const auto found = std::find(ids.begin(), ids.end(), row->head);
        if (found == ids.end())
            throw Error("the head table's head {}.{} is not in the model (layer {} keeps {} heads: {})", row->layer,
                        row->head, row->layer, ids.size(), fmt::join(ids, ", "));
        heads.push_back({row->layer, found - ids.begin()});
    }
    return head_mask(config, heads);
}

}  // namespace heads
