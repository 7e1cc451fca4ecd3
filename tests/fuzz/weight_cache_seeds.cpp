// Writes the seed corpus of the weight_cache fuzz target (tests/fuzz/weight_cache/)
// with the library's own writer: a valid cache of weight_cache_model.hpp's
// model in each weight format, and damaged ones (truncated, bad magic, bad
// JSON, a hostile oneDNN descriptor, strides past the data, a stale key).
//   build/tests/weight_cache_seeds tests/fuzz/weight_cache

#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <string>
#include <vector>

#include <fmt/format.h>

#include "weight_cache_model.hpp"

using namespace heads;

namespace {

std::string slurp(const std::filesystem::path& path) {
    std::ifstream in(path, std::ios::binary);
    return {std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
}

void spill(const std::filesystem::path& path, const std::string& bytes) {
    std::ofstream(path, std::ios::binary | std::ios::trunc) << bytes;
}

// The file with its first matrix's descriptor changed (same length of hex).
std::string with_desc(std::string text, void (*change)(dnnl_memory_desc_t&)) {
    const std::size_t at = text.find("\"desc\":\"") + 8;
    dnnl_memory_desc_t raw{};
    auto* bytes = reinterpret_cast<unsigned char*>(&raw);
    for (std::size_t i = 0; i < sizeof raw; ++i) bytes[i] = std::uint8_t(std::stoi(text.substr(at + 2 * i, 2), nullptr, 16));
    change(raw);
    for (std::size_t i = 0; i < sizeof raw; ++i) text.replace(at + 2 * i, 2, fmt::format("{:02x}", bytes[i]));
    return text;
}

}  // namespace

int main(int argc, char** argv) {
    if (argc != 2) {
        std::fprintf(stderr, "usage: weight_cache_seeds DIRECTORY\n");
        return 2;
    }
    const std::filesystem::path dir = argv[1];
    std::filesystem::create_directories(dir);
    Context ctx(1);
    const auto& specs = fuzz::kWeightCacheSpecs;
    std::vector<std::vector<float>> values;
    for (const auto& spec : specs) {
        std::vector<float> w(std::size_t(spec.in * spec.out));
        for (std::size_t i = 0; i < w.size(); ++i) w[i] = std::sin(float(i));
        values.push_back(std::move(w));
    }
    for (const WeightFormat format : fuzz::kWeightCacheFormats) {
        std::vector<PackedMatrix> made;
        for (std::size_t m = 0; m < specs.size(); ++m) {
            const Tensor part = Tensor::copy_of(DType::F32, {specs[m].out, specs[m].in}, std::as_bytes(std::span(values[m])));
            made.push_back(pack_matrix(ctx, std::span(&part, 1), format));
        }
        const auto path = dir / fmt::format("valid-{}.weights", format_name(format));
        if (!WeightCache(path, fuzz::weight_cache_key(format)).save(specs, made)) {
            std::fprintf(stderr, "weight_cache_seeds: cannot write %s\n", path.c_str());
            return 1;
        }
    }
    const std::string valid = slurp(dir / "valid-onednn-f32.weights");
    spill(dir / "truncated.weights", valid.substr(0, valid.size() / 2));
    spill(dir / "truncated-header.weights", valid.substr(0, 100));
    spill(dir / "bad-magic.weights", "HEADSWC2" + valid.substr(8));
    std::string json = valid;
    json[16] = '[';
    spill(dir / "bad-json.weights", json);
    std::string stale = valid;
    stale.replace(stale.find("fuzz-"), 5, "FUZZ-");
    spill(dir / "stale-key.weights", stale);
    spill(dir / "hostile-ndims.weights", with_desc(valid, [](dnnl_memory_desc_t& d) { d.ndims = 0x7fffffff; }));
    spill(dir / "hostile-inner-blocks.weights",
          with_desc(valid, [](dnnl_memory_desc_t& d) { d.format_desc.blocking.inner_nblks = 1000; }));
    spill(dir / "strides-past-data.weights",
          with_desc(valid, [](dnnl_memory_desc_t& d) { d.format_desc.blocking.strides[1] *= 1000; }));
    spill(dir / "format-kind.weights", with_desc(valid, [](dnnl_memory_desc_t& d) { d.format_kind = dnnl_format_kind_t(77); }));
    return 0;
}
