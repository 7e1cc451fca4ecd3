#include "safetensors/header.hpp"

#include <algorithm>
#include <limits>

#include <nlohmann/json.hpp>

#include "tensor/error.hpp"
#include "tensor/quote.hpp"

namespace heads {
namespace {

using Json = nlohmann::json;

std::uint64_t checked_offset(const Json& value, const std::string& name) {
    if (!value.is_number_unsigned()) throw Error("tensor {}: data_offsets must be two non-negative integers", quote(name));
    return value.get<std::uint64_t>();
}

HeaderEntry parse_entry(const std::string& name, const Json& value) {
    if (!value.is_object()) throw Error("tensor {}: its entry is not a JSON object", quote(name));
    const auto dtype_field = value.find("dtype");
    const auto shape_field = value.find("shape");
    const auto offsets_field = value.find("data_offsets");
    if (dtype_field == value.end() || shape_field == value.end() || offsets_field == value.end())
        throw Error("tensor {}: needs dtype, shape and data_offsets", quote(name));

    HeaderEntry entry;
    entry.spec.name = name;
    if (!dtype_field->is_string()) throw Error("tensor {}: dtype is not a string", quote(name));
    const auto& dtype_text = dtype_field->get_ref<const std::string&>();
    const auto dtype = dtype_from_name(dtype_text);
    if (!dtype) throw Error("tensor {}: unknown dtype {}", quote(name), quote(dtype_text));
    entry.spec.dtype = *dtype;

    if (!shape_field->is_array()) throw Error("tensor {}: shape is not an array", quote(name));
    // Count bytes in 128 bits so that no hostile shape can overflow.
    unsigned __int128 bytes = dtype_size(*dtype);
    for (const auto& extent : *shape_field) {
        if (!extent.is_number_unsigned())
            throw Error("tensor {}: shape must hold non-negative integers", quote(name));
        const auto value_extent = extent.get<std::uint64_t>();
        if (value_extent > std::uint64_t(std::numeric_limits<std::int64_t>::max()))
            throw Error("tensor {}: extent {} is too large", quote(name), value_extent);
        bytes *= value_extent;
        if (bytes > std::numeric_limits<std::uint64_t>::max()) throw Error("tensor {}: shape is too large", quote(name));
        entry.spec.shape.push_back(std::int64_t(value_extent));
    }

    if (!offsets_field->is_array() || offsets_field->size() != 2)
        throw Error("tensor {}: data_offsets must be two non-negative integers", quote(name));
    entry.begin = checked_offset((*offsets_field)[0], name);
    entry.end = checked_offset((*offsets_field)[1], name);
    if (entry.end < entry.begin) throw Error("tensor {}: data_offsets [{}, {}] end before they begin", quote(name), entry.begin, entry.end);
    if (entry.end - entry.begin != bytes)
        throw Error("tensor {}: {} {} needs {} bytes, data_offsets [{}, {}] hold {}", quote(name), dtype_text,
                    shape_string(entry.spec.shape), std::uint64_t(bytes), entry.begin, entry.end, entry.end - entry.begin);
    return entry;
}

}  // namespace

std::uint64_t read_header_size(const std::byte* bytes) {
    std::uint64_t size = 0;
    for (int i = 7; i >= 0; --i) size = size << 8 | std::uint64_t(bytes[i]);
    return size;
}

Header parse_header(std::string_view json) {
    Json root = Json::parse(json, nullptr, false);
    if (root.is_discarded()) throw Error("the header is not valid JSON");
    if (!root.is_object()) throw Error("the header is not a JSON object");

    Header header;
    for (const auto& [name, value] : root.items()) {
        if (name == "__metadata__") {
            if (!value.is_object()) throw Error("__metadata__ is not a JSON object");
            for (const auto& [key, text] : value.items()) {
                if (!text.is_string()) throw Error("__metadata__ {} is not a string", quote(key));
                header.metadata.emplace(key, text.get<std::string>());
            }
            continue;
        }
        header.tensors.push_back(parse_entry(name, value));
    }

    std::sort(header.tensors.begin(), header.tensors.end(), [](const HeaderEntry& a, const HeaderEntry& b) {
        return a.begin != b.begin ? a.begin < b.begin : a.end < b.end;
    });
    const HeaderEntry* previous = nullptr;
    for (const auto& entry : header.tensors) {
        if (entry.begin < header.data_size)
            throw Error("tensors {} and {} overlap", quote(previous->spec.name), quote(entry.spec.name));
        if (entry.begin > header.data_size)
            throw Error("{} bytes of the data before tensor {} belong to no tensor", entry.begin - header.data_size,
                        quote(entry.spec.name));
        header.data_size = entry.end;
        previous = &entry;
    }
    return header;
}

std::string serialize_header(const std::vector<TensorSpec>& tensors, const Metadata& metadata) {
    nlohmann::ordered_json root = nlohmann::ordered_json::object();
    if (!metadata.empty()) {
        auto& meta = root["__metadata__"] = nlohmann::ordered_json::object();
        for (const auto& [key, value] : metadata) meta[key] = value;
    }
    std::uint64_t offset = 0;
    for (const auto& spec : tensors) {
        if (spec.name == "__metadata__") throw Error("a tensor cannot be named __metadata__");
        if (root.contains(spec.name)) throw Error("two tensors named {} in one frame", quote(spec.name));
        const std::uint64_t bytes = std::uint64_t(element_count(spec.shape)) * dtype_size(spec.dtype);
        root[spec.name] = {{"dtype", dtype_name(spec.dtype)}, {"shape", spec.shape}, {"data_offsets", {offset, offset + bytes}}};
        offset += bytes;
    }
    std::string json = root.dump();
    json.resize((json.size() + 7) / 8 * 8, ' ');
    std::string out(8, '\0');
    for (int i = 0; i < 8; ++i) out[std::size_t(i)] = char((std::uint64_t(json.size()) >> (8 * i)) & 0xff);
    return out + json;
}

}  // namespace heads
