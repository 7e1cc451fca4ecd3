#include "model/weight_cache.hpp"

#include <cstdlib>
#include <cstring>
#include <type_traits>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "io/mapped_file.hpp"
#include "io/output.hpp"
#include "tensor/error.hpp"

namespace heads {
namespace {

constexpr char kMagic[8] = {'H', 'E', 'A', 'D', 'S', 'W', 'C', '1'};
constexpr std::uint64_t kPage = 4096;

std::uint64_t round_up(std::uint64_t value) { return (value + kPage - 1) / kPage * kPage; }

// FNV-1a over up to 256 bytes at the start and at the end of a block given
// as consecutive pieces.
std::uint64_t sample_hash(const std::vector<std::span<const std::byte>>& pieces) {
    std::size_t size = 0;
    for (const auto& piece : pieces) size += piece.size();
    const std::size_t take = std::min<std::size_t>(256, size);
    std::uint64_t h = 1469598103934665603ull;
    for (const std::size_t from : {std::size_t(0), size - take}) {
        std::size_t skip = from, left = take;
        for (const auto& piece : pieces) {
            if (skip >= piece.size()) {
                skip -= piece.size();
                continue;
            }
            const std::size_t n = std::min(left, piece.size() - skip);
            for (std::size_t i = 0; i < n; ++i) {
                h ^= std::uint8_t(piece[skip + i]);
                h *= 1099511628211ull;
            }
            left -= n;
            skip = 0;
            if (left == 0) break;
        }
    }
    return h;
}

std::string to_hex(const void* data, std::size_t size) {
    std::string text;
    for (std::size_t i = 0; i < size; ++i) text += fmt::format("{:02x}", static_cast<const unsigned char*>(data)[i]);
    return text;
}

bool from_hex(const std::string& text, void* data, std::size_t size) {
    if (text.size() != 2 * size) return false;
    const auto digit = [](char c) {
        return c >= '0' && c <= '9' ? c - '0' : c >= 'a' && c <= 'f' ? c - 'a' + 10 : -1;
    };
    auto* out = static_cast<unsigned char*>(data);
    for (std::size_t i = 0; i < size; ++i) {
        const int high = digit(text[2 * i]), low = digit(text[2 * i + 1]);
        if (high < 0 || low < 0) return false;
        out[i] = static_cast<unsigned char>(high * 16 + low);
    }
    return true;
}

// Where a check failed: "PATH: matrix 3 (layers.0.o): ...".
struct Where {
    const std::string& path;
    std::size_t index;
    const std::string& matrix;
    template <class... Args>
    Error error(fmt::format_string<Args...> format, Args&&... args) const {
        return Error("{}: matrix {} ({}): {}", path, index, matrix, fmt::format(format, std::forward<Args>(args)...));
    }
};

// The integer a file stored in an enum field. The file may hold any value,
// and reading one that is none of the enum's values as the enum is undefined
// behaviour: the field's bytes are read as its underlying integer instead.
template <class Enum>
std::underlying_type_t<Enum> stored_value(const Enum& field) {
    std::underlying_type_t<Enum> value;
    static_assert(sizeof value == sizeof field);
    std::memcpy(&value, &field, sizeof value);
    return value;
}

// A matrix's oneDNN descriptor from its hex text, checked field by field
// before oneDNN sees it (oneDNN trusts a descriptor: a hostile ndims or stride
// would make it read out of bounds), and rebuilt from the checked fields only.
// A plain or blocked [in, out] layout of `type` whose every element lies
// within its size, which is `size` bytes.
dnnl::memory::desc checked_desc(const std::string& hex, std::int64_t in, std::int64_t out, dnnl_data_type_t type,
                                std::uint64_t size, const Where& where) {
    dnnl_memory_desc_t raw{};
    if (!from_hex(hex, &raw, sizeof raw))
        throw where.error("layout is not {} hex digits", 2 * sizeof raw);
    if (raw.ndims != 2) throw where.error("layout has {} dimensions, not 2", raw.ndims);
    if (raw.dims[0] != in || raw.dims[1] != out)
        throw where.error("layout is [{}, {}], not [{}, {}]", raw.dims[0], raw.dims[1], in, out);
    if (const auto data_type = stored_value(raw.data_type); data_type != stored_value(type))
        throw where.error("layout has another data type ({})", data_type);
    if (const auto kind = stored_value(raw.format_kind); kind != stored_value(dnnl_blocked))
        throw where.error("layout is not a blocked one ({})", kind);
    if (raw.offset0 != 0 || raw.padded_offsets[0] != 0 || raw.padded_offsets[1] != 0)
        throw where.error("layout has an offset");
    if (raw.extra.flags != 0) throw where.error("layout has extra flags");
    const dnnl_blocking_desc_t& blocking = raw.format_desc.blocking;
    if (blocking.inner_nblks < 0 || blocking.inner_nblks > 4)
        throw where.error("layout has {} inner blocks", blocking.inner_nblks);
    // Each dimension's block (the product of its inner blocks) and the
    // elements of one innermost block, bounded so nothing below overflows.
    std::int64_t block[2] = {1, 1}, inner = 1;
    for (int i = 0; i < blocking.inner_nblks; ++i) {
        const dnnl_dim_t b = blocking.inner_blks[i];
        const dnnl_dim_t d = blocking.inner_idxs[i];
        if (b < 1 || b > 4096 || d < 0 || d > 1) throw where.error("layout has a bad inner block");
        block[d] *= b;
        inner *= b;
        if (block[d] > 4096) throw where.error("layout has a bad inner block");
    }
    const std::uint64_t element = type == dnnl_f32 ? 4 : 2;
    std::int64_t outer[2];
    for (int d = 0; d < 2; ++d) {
        const dnnl_dim_t padded = raw.padded_dims[d];
        if (padded < raw.dims[d] || padded > raw.dims[d] + block[d] || padded % block[d] != 0)
            throw where.error("layout has padded dimension {} of {}", d, padded);
        outer[d] = padded / block[d];
    }
    // Elements and strides bounded by the bytes the file holds for the matrix.
    const std::uint64_t elements = std::uint64_t(raw.padded_dims[0]) * std::uint64_t(raw.padded_dims[1]);
    if (elements * element != size)
        throw where.error("layout holds {} bytes, the header says {}", elements * element, size);
    // The last element's offset: Σ (outer_d - 1) · stride_d + (inner - 1) < elements.
    std::uint64_t last = std::uint64_t(inner - 1);
    for (int d = 0; d < 2; ++d) {
        const dnnl_dim_t stride = blocking.strides[d];
        if (stride < 0 || (outer[d] > 1 && std::uint64_t(stride) > elements / std::uint64_t(outer[d] - 1)))
            throw where.error("layout has a bad stride");
        last += std::uint64_t(outer[d] - 1) * std::uint64_t(stride);
    }
    if (last >= elements) throw where.error("layout reaches past its {} elements", elements);

    dnnl_memory_desc_t clean{};
    clean.ndims = 2;
    clean.data_type = type;
    clean.format_kind = dnnl_blocked;
    for (int d = 0; d < 2; ++d) {
        clean.dims[d] = raw.dims[d];
        clean.padded_dims[d] = raw.padded_dims[d];
        clean.format_desc.blocking.strides[d] = blocking.strides[d];
    }
    clean.format_desc.blocking.inner_nblks = blocking.inner_nblks;
    for (int i = 0; i < blocking.inner_nblks; ++i) {
        clean.format_desc.blocking.inner_blks[i] = blocking.inner_blks[i];
        clean.format_desc.blocking.inner_idxs[i] = blocking.inner_idxs[i];
    }
    const dnnl::memory::desc desc(clean);
    if (desc.get_size() != size) throw where.error("layout holds {} bytes, the header says {}", desc.get_size(), size);
    return desc;
}

}  // namespace

WeightCache::WeightCache(std::filesystem::path path, std::string key) : path_(std::move(path)), key_(std::move(key)) {}

std::optional<std::filesystem::path> WeightCache::directory() {
    if (const char* set = std::getenv("HEADS_WEIGHT_CACHE"); set && *set) {
        if (std::string(set) == "off") return std::nullopt;
        return std::filesystem::path(set);
    }
    if (const char* xdg = std::getenv("XDG_CACHE_HOME"); xdg && *xdg) return std::filesystem::path(xdg) / "heads";
    if (const char* home = std::getenv("HOME"); home && *home) return std::filesystem::path(home) / ".cache" / "heads";
    return std::nullopt;
}

std::optional<std::vector<PackedMatrix>> WeightCache::read(const std::vector<CachedMatrixSpec>& specs,
                                                          WeightFormat format) const {
    std::error_code missing;
    if (!std::filesystem::exists(path_, missing)) return std::nullopt;
    const std::string name = path_.string();
    const auto file = MappedFile::open(path_);
    const auto bytes = file->bytes();
    if (bytes.size() < 16 || std::memcmp(bytes.data(), kMagic, 8) != 0)
        throw Error("{}: not a weight cache (no HEADSWC1 at its start)", name);
    std::uint64_t header_size = 0;
    std::memcpy(&header_size, bytes.data() + 8, 8);
    if (header_size > bytes.size() - 16)
        throw Error("{}: truncated: a header of {} bytes in a file of {}", name, header_size, bytes.size());
    const auto header = nlohmann::json::parse(reinterpret_cast<const char*>(bytes.data()) + 16,
                                              reinterpret_cast<const char*>(bytes.data()) + 16 + header_size, nullptr,
                                              false);
    if (header.is_discarded()) throw Error("{}: header is not valid JSON", name);
    const std::string* key = header.is_object() && header.contains("key") ? header["key"].get_ptr<const std::string*>()
                                                                            : nullptr;
    if (!key) throw Error("{}: header has no \"key\" string", name);
    if (*key != key_) return std::nullopt;  // made from another model, ISA or oneDNN: not damaged
    const auto* list = header.contains("matrices") ? &header["matrices"] : nullptr;
    if (!list || !list->is_array()) throw Error("{}: header has no \"matrices\" list", name);
    if (list->size() != specs.size())
        throw Error("{}: {} matrices, the model has {}", name, list->size(), specs.size());
    const dnnl_data_type_t type = format == WeightFormat::rows_bf16 ? dnnl_bf16 : dnnl_f32;
    std::vector<PackedMatrix> matrices;
    for (std::size_t i = 0; i < specs.size(); ++i) {
        const Where where{name, i, specs[i].name};
        const auto& entry = (*list)[i];
        if (!entry.is_object()) throw where.error("not an object");
        const auto field = [&](const char* field_name, nlohmann::json::value_t kind) -> const nlohmann::json& {
            const auto found = entry.find(field_name);
            if (found == entry.end()) throw where.error("no \"{}\"", field_name);
            const bool unsigned_ok = kind == nlohmann::json::value_t::number_unsigned &&
                                     found->type() == nlohmann::json::value_t::number_unsigned;
            const bool integer_ok = kind == nlohmann::json::value_t::number_integer && found->is_number_integer();
            if (found->type() != kind && !unsigned_ok && !integer_ok) throw where.error("\"{}\" has the wrong type", field_name);
            return *found;
        };
        using Kind = nlohmann::json::value_t;
        if (field("name", Kind::string).get_ref<const std::string&>() != specs[i].name ||
            field("in", Kind::number_integer).get<std::int64_t>() != specs[i].in ||
            field("out", Kind::number_integer).get<std::int64_t>() != specs[i].out)
            throw where.error("the file holds another matrix");
        const std::uint64_t offset = field("offset", Kind::number_unsigned).get<std::uint64_t>();
        const std::uint64_t size = field("size", Kind::number_unsigned).get<std::uint64_t>();
        const std::uint64_t check = field("check", Kind::number_unsigned).get<std::uint64_t>();
        if (offset % kPage != 0 || offset < 16 + header_size || offset > bytes.size() || size > bytes.size() - offset)
            throw where.error("bytes {}..+{} are not within the file's {} after its header", offset, size, bytes.size());
        const dnnl::memory::desc desc =
            checked_desc(field("desc", Kind::string).get_ref<const std::string&>(), specs[i].in, specs[i].out, type,
                         size, where);
        const std::byte* data = bytes.data() + offset;
        if (sample_hash({{data, size}}) != check) throw where.error("its bytes do not match their check");
        if (is_rows(format)) {
            const DType dtype = format == WeightFormat::rows_bf16 ? DType::BF16 : DType::F32;
            const dnnl::memory::desc plain({specs[i].in, specs[i].out}, dnnl::memory::data_type(type),
                                           dnnl::memory::format_tag::ba);
            if (layout_hash(plain) != layout_hash(desc)) throw where.error("not a plain [out, in] layout of rows");
            matrices.emplace_back(RowMatrix({Tensor::view(dtype, {specs[i].out, specs[i].in}, data, file)}),
                                  compute_of(format));
        } else {
            matrices.emplace_back(specs[i].in, specs[i].out, compute_of(format), desc, data, file);
        }
        // The key names the model by a fingerprint that samples its weights and by
        // its files' sizes and times; another model of the same shape can share
        // them. Its values would pass every check above and give wrong logits.
        if (!specs[i].parts.empty() && !made_from(matrices.back(), specs[i].parts))
            throw where.error("its values are not those of the model's weights (made from another model)");
    }
    return matrices;
}

std::optional<std::vector<PackedMatrix>> WeightCache::load(const std::vector<CachedMatrixSpec>& specs,
                                                          WeightFormat format) const {
    try {
        return read(specs, format);
    } catch (const Error&) {  // unreadable or damaged: make the weights again
        return std::nullopt;
    }
}

bool WeightCache::save(const std::vector<CachedMatrixSpec>& specs, const std::vector<PackedMatrix>& matrices) const noexcept {
    try {
        std::filesystem::create_directories(path_.parent_path());
        nlohmann::json list = nlohmann::json::array();
        std::uint64_t offset = 0;
        for (std::size_t i = 0; i < specs.size(); ++i) {
            const PackedMatrix& m = matrices[i];
            list.push_back({{"name", specs[i].name}, {"in", m.in()}, {"out", m.out()},
                            {"desc", to_hex(&m.desc().data, sizeof m.desc().data)}, {"offset", offset},
                            {"size", m.nbytes()},
                            {"check", sample_hash(m.pieces())}});
            offset += round_up(m.nbytes());
        }
        // Offsets are relative to the data start; make them absolute (the header's
        // own length depends on them, so iterate until it is stable).
        std::string text;
        std::uint64_t data_start = 0;
        for (int pass = 0; pass < 4; ++pass) {
            nlohmann::json shifted = list;
            for (auto& entry : shifted) entry["offset"] = entry["offset"].get<std::uint64_t>() + data_start;
            text = nlohmann::json{{"key", key_}, {"matrices", shifted}}.dump();
            const std::uint64_t needed = round_up(16 + text.size());
            if (needed == data_start) break;
            data_start = needed;
        }
        if (round_up(16 + text.size()) != data_start) return false;
        AtomicFile out(path_);
        const std::uint64_t header_size = text.size();
        write_all(out.get(), {reinterpret_cast<const std::byte*>(kMagic), 8});
        write_all(out.get(), {reinterpret_cast<const std::byte*>(&header_size), 8});
        write_all(out.get(), text);
        std::uint64_t written = 16 + text.size();
        const std::vector<std::byte> zeros(kPage);
        for (const PackedMatrix& m : matrices) {
            const std::uint64_t pad = round_up(written) - written;
            write_all(out.get(), {zeros.data(), pad});
            for (const auto& piece : m.pieces()) write_all(out.get(), piece);
            written += pad + m.nbytes();
        }
        out.commit();
        return true;
    } catch (const std::exception&) {
        return false;
    }
}

}  // namespace heads
