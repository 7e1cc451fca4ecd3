// The replay's own test: a target whose check fails on an input starting
// with "fail", and one that throws on "throw". Replayed over
// tests/fuzz/replay_selftest/, the replay must exit 1 (WILL_FAIL in ctest).

#include <cstddef>
#include <cstdint>
#include <stdexcept>
#include <string_view>

#include "fuzz_check.hpp"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    const std::string_view text(reinterpret_cast<const char*>(data), size);
    heads::fuzz::check(!text.starts_with("fail"), "the input starts with 'fail'");
    if (text.starts_with("throw")) throw std::runtime_error("an exception other than heads::Error");
    return 0;
}
