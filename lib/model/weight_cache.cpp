#include "model/weight_cache.hpp"

#include <cstdlib>
#include <cstring>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "io/mapped_file.hpp"
#include "io/output.hpp"

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
    auto* out = static_cast<unsigned char*>(data);
    for (std::size_t i = 0; i < size; ++i) {
        unsigned value = 0;
        if (std::sscanf(text.c_str() + 2 * i, "%2x", &value) != 1) return false;
        out[i] = static_cast<unsigned char>(value);
    }
    return true;
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

std::optional<std::vector<PackedMatrix>> WeightCache::load(const std::vector<CachedMatrixSpec>& specs,
                                                          WeightFormat format) const {
    std::error_code missing;
    if (!std::filesystem::exists(path_, missing)) return std::nullopt;
    try {
        const auto file = MappedFile::open(path_);
        const auto bytes = file->bytes();
        if (bytes.size() < 16 || std::memcmp(bytes.data(), kMagic, 8) != 0) return std::nullopt;
        std::uint64_t header_size = 0;
        std::memcpy(&header_size, bytes.data() + 8, 8);
        if (header_size > bytes.size() - 16) return std::nullopt;
        const auto header = nlohmann::json::parse(std::string(reinterpret_cast<const char*>(bytes.data()) + 16, header_size));
        if (header.at("key").get<std::string>() != key_) return std::nullopt;
        const auto& list = header.at("matrices");
        if (list.size() != specs.size()) return std::nullopt;
        std::vector<PackedMatrix> matrices;
        for (std::size_t i = 0; i < specs.size(); ++i) {
            const auto& entry = list[i];
            if (entry.at("name").get<std::string>() != specs[i].name || entry.at("in").get<std::int64_t>() != specs[i].in ||
                entry.at("out").get<std::int64_t>() != specs[i].out)
                return std::nullopt;
            dnnl_memory_desc_t raw{};
            if (!from_hex(entry.at("desc").get<std::string>(), &raw, sizeof raw)) return std::nullopt;
            const dnnl::memory::desc desc(raw);
            const std::uint64_t offset = entry.at("offset").get<std::uint64_t>();
            const std::uint64_t size = entry.at("size").get<std::uint64_t>();
            if (desc.get_size() != size || offset % kPage != 0 || offset > bytes.size() || size > bytes.size() - offset ||
                desc.dims() != dnnl::memory::dims{specs[i].in, specs[i].out})
                return std::nullopt;
            const std::byte* data = bytes.data() + offset;
            if (sample_hash({{data, size}}) != entry.at("check").get<std::uint64_t>()) return std::nullopt;
            if (is_rows(format)) {
                const auto type = desc.data_type();
                const DType dtype = type == dnnl::memory::data_type::bf16  ? DType::BF16
                                    : type == dnnl::memory::data_type::f16 ? DType::F16
                                                                           : DType::F32;
                PackedMatrix rows(RowMatrix({Tensor::view(dtype, {specs[i].out, specs[i].in}, data, file)}),
                                  compute_of(format));
                if (layout_hash(rows.desc()) != layout_hash(desc)) return std::nullopt;
                matrices.push_back(std::move(rows));
            } else {
                matrices.emplace_back(specs[i].in, specs[i].out, compute_of(format), desc, data, file);
            }
        }
        return matrices;
    } catch (const std::exception&) {  // unreadable, bad JSON, bad layout: rebuild
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
