// Replays a fuzz corpus (every file under the given folders) through a
// libFuzzer target in an ordinary build: what `make test` runs. A case
// fails when a heads::fuzz::check fails or any exception escapes the target
// (only heads::Error may be thrown by a parser, and the target catches it);
// each failure is named, and the replay exits 1 if any case failed, or if
// it found no case at all (a corpus folder missing or empty).

#include <cstdint>
#include <cstdio>
#include <exception>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <vector>

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size);

int main(int argc, char** argv) {
    int passed = 0, failed = 0;
    for (int i = 1; i < argc; ++i) {
        std::error_code error;
        std::filesystem::recursive_directory_iterator folder(argv[i], error);
        if (error) {
            std::printf("FAIL: %s: %s\n", argv[i], error.message().c_str());
            ++failed;
            continue;
        }
        for (const auto& entry : folder) {
            if (!entry.is_regular_file()) continue;
            std::ifstream in(entry.path(), std::ios::binary);
            const std::vector<char> bytes{std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
            try {
                LLVMFuzzerTestOneInput(reinterpret_cast<const std::uint8_t*>(bytes.data()), bytes.size());
                ++passed;
            } catch (const std::exception& error) {
                std::printf("FAIL: %s: %s\n", entry.path().c_str(), error.what());
                ++failed;
            }
        }
    }
    std::printf("%d passed, %d failed\n", passed, failed);
    return failed == 0 && passed > 0 ? 0 : 1;
}
