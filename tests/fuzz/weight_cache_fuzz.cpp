// libFuzzer target: arbitrary bytes as a weight-cache file (WeightCache::read,
// which maps a path: the bytes go to a temporary file), read for the model of
// weight_cache_model.hpp in each weight format. A hostile file may only ever
// raise heads::Error naming the file; a file made for another key is a miss
// (nullopt); what is accepted is every matrix of the model, in order, with
// its shape and the format's kind (rows or oneDNN's layout), each of
// nbytes() bytes (all read here) that the layout holds exactly.

#include <unistd.h>

#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <string_view>

#include "fuzz_check.hpp"
#include "tensor/error.hpp"
#include "weight_cache_model.hpp"

using heads::fuzz::check;

namespace {

volatile std::uint8_t touched;  // every byte of an accepted matrix was read

// One temporary file for the whole run, rewritten for each input.
const std::string& cache_path() {
    static const std::string path = [] {
        const char* dir = std::getenv("TMPDIR");
        std::string name = std::string(dir && *dir ? dir : "/tmp") + "/heads-weight-cache-fuzz-XXXXXX";
        const int fd = mkstemp(name.data());
        if (fd < 0) std::abort();
        close(fd);
        std::atexit([] { std::remove(cache_path().c_str()); });
        return name;
    }();
    return path;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    const std::string& path = cache_path();
    {
        std::FILE* file = std::fopen(path.c_str(), "wb");
        if (!file || std::fwrite(data, 1, size, file) != size || std::fclose(file) != 0) std::abort();
    }
    const auto& specs = heads::fuzz::kWeightCacheSpecs;
    for (const heads::WeightFormat format : heads::fuzz::kWeightCacheFormats) {
        const heads::WeightCache cache(path, heads::fuzz::weight_cache_key(format));
        try {
            const auto matrices = cache.read(specs, format);
            if (!matrices) continue;
            check(matrices->size() == specs.size(), "not every matrix of the model");
            for (std::size_t i = 0; i < specs.size(); ++i) {
                const heads::PackedMatrix& m = (*matrices)[i];
                check(m.in() == specs[i].in && m.out() == specs[i].out, "a matrix of another shape");
                check((m.rows() != nullptr) == heads::is_rows(format), "a matrix of another kind than the format's");
                check(m.desc().get_size() == m.nbytes(), "a layout that does not hold the matrix's bytes");
                check(m.nbytes() <= size, "a matrix larger than the file");
                std::uint8_t sum = 0;
                for (const auto& piece : m.pieces())
                    for (const std::byte b : piece) sum = std::uint8_t(sum + std::uint8_t(b));
                touched = sum;
            }
        } catch (const heads::Error& error) {
            check(std::string_view(error.what()).starts_with(path + ": "), "an error that does not name the cache file");
        }
    }
    return 0;
}
