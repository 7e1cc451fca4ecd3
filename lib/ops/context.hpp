#pragma once
// The one object that holds process-wide compute state: the oneDNN engine and
// stream, the thread count, the cache of matmul primitives and the scratch
// memory oneDNN works in. Made once by a tool and passed to everything that
// computes; nothing else in the library keeps state between calls.
// Not thread-safe: one Context per thread that drives a model.

#include <cstddef>
#include <cstdint>
#include <list>
#include <memory>
#include <string>
#include <unordered_map>

#include <dnnl.hpp>

#include "ops/buffer.hpp"
#include "ops/work_pool.hpp"

namespace heads {

// The arithmetic a packed weight matrix is multiplied in.
enum class ComputeType { f32, bf16 };

struct MatmulKey {
    std::int64_t rows, in, out;
    ComputeType compute;
    bool accumulate;
    std::uint64_t layout;  // hash of the weights' memory descriptor
    std::int64_t ldy;      // row stride of the output (out, or more for a part of W's rows)
    bool operator==(const MatmulKey&) const = default;
};

struct MatmulKeyHash {
    std::size_t operator()(const MatmulKey& key) const;
};

// A cached primitive and the memory objects it runs on; the data handles are
// set per call, so running it allocates nothing.
struct MatmulEntry {
    dnnl::matmul primitive;
    dnnl::memory src, weights, dst, scratchpad;
    std::size_t scratchpad_size = 0;
};

class Context {
public:
    // threads <= 0: all cores the process may use.
    explicit Context(int threads = 0);
    Context(const Context&) = delete;
    Context& operator=(const Context&) = delete;

    dnnl::engine& engine() { return engine_; }
    dnnl::stream& stream() { return stream_; }
    int threads() const { return threads_; }
    // The threads of decode's loops (ops/work_pool.hpp); oneDNN and the
    // prefill loops use OpenMP's, threads() of them.
    WorkPool& pool() { return pool_; }

    // Whether this CPU runs oneDNN's bf16 matmul (AVX512-BF16 or AMX); probed once.
    bool has_bf16_matmul();
    // Whether bf16 weights are multiplied in bf16 arithmetic here: oneDNN's
    // bf16 matmul (prefill) and the vdpbf16ps row GEMV (decode) both run, so
    // not under ONEDNN_MAX_CPU_ISA=AVX2. Else bf16 weights are multiplied in f32.
    bool bf16_arithmetic();
    // Whether bf16 arithmetic over many rows (prefill) runs on oneDNN's bf16
    // matmul, or on its f32 one over the same values: x rounded to bf16 and
    // the bf16 weights widened, so products are exact and sums f32 as in
    // vdpbf16ps. The bf16 kernels win where bf16 dot products outrun f32
    // FMAs: AMX, and AMD's Zen 4 and 5. Intel's AVX512-BF16 without AMX
    // issues vdpbf16ps at half the rate of f32 FMAs (oneDNN's bf16 matmul
    // measured 86 against 173 GFLOPS in f32 on one core of a Xeon), so there
    // the f32 kernels win. set_bf16_gemm overrides the choice (tests).
    bool bf16_gemm();
    void set_bf16_gemm(bool on) { bf16_gemm_ = on ? 1 : 0; }
    // oneDNN's effective ISA, as a short name ("avx2", "avx512_core_bf16", ...).
    std::string isa() const;
    // "2.6.3"
    static std::string onednn_version();
    // The path this CPU takes, for --version and bug reports:
    // "oneDNN 2.6.3 on avx512_core_bf16, bf16 arithmetic: yes" (and where
    // bf16_gemm() is false: " (prefill on f32 kernels)").
    std::string describe();

    // The cached primitive for `key`, or null; add_matmul() stores a new one
    // (an LRU of kMatmulCacheSize entries: the oldest is dropped).
    MatmulEntry* find_matmul(const MatmulKey& key);
    MatmulEntry& add_matmul(const MatmulKey& key, MatmulEntry entry);
    std::size_t matmul_cache_size() const { return matmul_cache_.size(); }

    // The four small-block matmuls of gemm() (ops/matmul.hpp): runtime shapes
    // and strides, B plain or transposed, C overwritten or accumulated. Made
    // on first call; call it before entering a parallel region.
    const dnnl::matmul& gemm_primitive(bool b_transposed, bool accumulate);

    // Scratch for activations converted to bf16 before a bf16 matmul.
    std::uint16_t* bf16_scratch(std::size_t count) { return bf16_scratch_.reserve(count); }
    std::byte* onednn_scratchpad(std::size_t bytes) { return scratchpad_.reserve(bytes); }
    // Scratch for a panel of weights converted to f32 (ops/matmul.cpp).
    float* panel_scratch(std::size_t count) { return panel_scratch_.reserve(count); }
    // Scratch for activations rounded to bf16 and widened back, for bf16
    // arithmetic on f32 kernels (bf16_gemm()).
    float* rounded_scratch(std::size_t count) { return rounded_scratch_.reserve(count); }

    static constexpr std::size_t kMatmulCacheSize = 256;

private:
    dnnl::engine engine_;
    dnnl::stream stream_;
    int threads_;
    WorkPool pool_;
    int bf16_matmul_ = -1;  // -1 not probed yet
    int bf16_gemm_ = -1;    // -1 not decided yet

    using Lru = std::list<MatmulKey>;
    struct Cached {
        MatmulEntry entry;
        Lru::iterator age;
    };
    Lru ages_;
    std::unordered_map<MatmulKey, Cached, MatmulKeyHash> matmul_cache_;
    std::unique_ptr<dnnl::matmul> gemm_[2][2];
    Buffer<std::uint16_t> bf16_scratch_;
    Buffer<std::byte> scratchpad_;
    Buffer<float> panel_scratch_;
    Buffer<float> rounded_scratch_;
};

}  // namespace heads
