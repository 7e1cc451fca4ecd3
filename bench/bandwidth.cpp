// bandwidth: how fast this machine reads memory, the ceiling of decode (which
// streams every weight once per token), as scripts/bench llamacpp reports it
// beside each engine's decode (not installed). Fills a buffer of --mib MiB
// (2 MiB pages where the kernel gives them, as the weights' mapping gets),
// then reads it --passes times with -t threads, each thread its own slice
// with AVX2 loads; prints one TSV row: what, GB/s of the best pass, its
// seconds, the buffer's bytes and the threads.
#include <sys/mman.h>

#include <immintrin.h>
#include <omp.h>

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <stdexcept>

#include <CLI/CLI.hpp>
#include <fmt/format.h>

#include "cli/options.hpp"
#include "cli/run.hpp"

namespace {

using Clock = std::chrono::steady_clock;

// The sum of 32-byte words [first, last) as 64-bit lanes: four independent
// chains keep the loads in flight; the sum is printed so no load is dropped.
__attribute__((target("avx2"))) std::uint64_t read_slice(const __m256i* first, const __m256i* last) {
    __m256i acc[4] = {_mm256_setzero_si256(), _mm256_setzero_si256(), _mm256_setzero_si256(), _mm256_setzero_si256()};
    for (; first + 4 <= last; first += 4)
        for (int u = 0; u < 4; ++u) acc[u] = _mm256_add_epi64(acc[u], _mm256_load_si256(first + u));
    for (; first < last; ++first) acc[0] = _mm256_add_epi64(acc[0], _mm256_load_si256(first));
    alignas(32) std::uint64_t lanes[4];
    _mm256_store_si256(reinterpret_cast<__m256i*>(lanes),
                       _mm256_add_epi64(_mm256_add_epi64(acc[0], acc[1]), _mm256_add_epi64(acc[2], acc[3])));
    return lanes[0] + lanes[1] + lanes[2] + lanes[3];
}

}  // namespace

int main(int argc, char** argv) {
    CLI::App app{"Measure the memory read bandwidth", "bandwidth"};
    int threads = 0, passes = 5;
    std::int64_t mib = 1024;
    heads::cli::add_threads_option(app, threads);
    app.add_option("--mib", mib, "buffer size in MiB (at least 1024: far past every cache)")->check(CLI::Range(1024, 1 << 20));
    app.add_option("--passes", passes, "reads of the whole buffer (the best is reported)")->check(CLI::Range(1, 1000));
    return heads::cli::run(app, argc, argv, [&] {
        if (!__builtin_cpu_supports("avx2")) throw std::runtime_error("this CPU has no AVX2");
        const int n = heads::cli::thread_count(threads);
        omp_set_num_threads(n);
        const std::size_t bytes = std::size_t(mib) << 20;
        void* memory = mmap(nullptr, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        if (memory == MAP_FAILED) throw std::runtime_error(fmt::format("cannot map {} MiB", mib));
        madvise(memory, bytes, MADV_HUGEPAGE);
        auto* words = static_cast<std::uint64_t*>(memory);
        const std::int64_t count = std::int64_t(bytes / sizeof(std::uint64_t));
#pragma omp parallel for schedule(static)
        for (std::int64_t i = 0; i < count; ++i) words[i] = std::uint64_t(i);

        const auto* blocks = static_cast<const __m256i*>(memory);
        const std::int64_t n_blocks = std::int64_t(bytes / sizeof(__m256i));
        double best = 1e30;
        std::uint64_t checksum = 0;
        for (int pass = 0; pass < passes; ++pass) {
            std::uint64_t sum = 0;
            const auto start = Clock::now();
#pragma omp parallel reduction(+ : sum)
            {
                const std::int64_t per = (n_blocks + omp_get_num_threads() - 1) / omp_get_num_threads();
                const std::int64_t first = std::min(n_blocks, per * omp_get_thread_num());
                sum += read_slice(blocks + first, blocks + std::min(n_blocks, first + per));
            }
            best = std::min(best, std::chrono::duration<double>(Clock::now() - start).count());
            checksum += sum;
        }
        munmap(memory, bytes);
        fmt::print("what\tGB_per_s\tseconds\tbytes\tthreads\tchecksum\n");
        fmt::print("read\t{:.2f}\t{:.4f}\t{}\t{}\t{:x}\n", double(bytes) / best / 1e9, best, bytes, n, checksum);
    });
}
