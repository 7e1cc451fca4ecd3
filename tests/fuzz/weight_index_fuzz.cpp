// libFuzzer target: arbitrary bytes as model.safetensors.index.json
// (parse_weight_index). A hostile input may only ever raise heads::Error
// naming the file; what parses is a sorted list of distinct shard names, each
// a plain file of the model directory: never empty, ".", "..", nor holding a
// '/' (a folder, or a way out) or a NUL (the system would open a shorter name).

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <string_view>

#include "fuzz_check.hpp"
#include "model/weights.hpp"
#include "tensor/error.hpp"

using heads::fuzz::check;

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    const std::string_view text(reinterpret_cast<const char*>(data), size);
    try {
        const auto shards = heads::parse_weight_index(text, "model.safetensors.index.json");
        check(!shards.empty(), "an index of no shard");
        check(std::adjacent_find(shards.begin(), shards.end(), [](const auto& a, const auto& b) { return !(a < b); }) ==
                  shards.end(),
              "shards not sorted and distinct");
        for (const auto& shard : shards) {
            check(!shard.empty() && shard != "." && shard != "..", "a shard named '', '.' or '..'");
            check(shard.find('/') == std::string::npos, "a shard name with a '/'");
            check(shard.find('\0') == std::string::npos, "a shard name with a NUL");
        }
    } catch (const heads::Error& error) {
        check(std::string_view(error.what()).starts_with("model.safetensors.index.json: "),
              "an error that does not name the index");
    }
    return 0;
}
