#include "ops/row_gemv.hpp"

#include <cpuid.h>
#include <immintrin.h>

#include <algorithm>
#include <array>
#include <stdexcept>
#include <vector>

#include <fmt/format.h>

namespace heads {
namespace {

#define HEADS_AVX2 __attribute__((target("avx2,fma,f16c")))

// The weights' element types: bf16 and f16 are both 16 bits.
struct Bf16 {
    std::uint16_t bits;
};
struct F16 {
    std::uint16_t bits;
};

// 8 weights at w[k] as f32 (exact: every bf16 and f16 value is an f32 value).
template <class W> HEADS_AVX2 inline __m256 load8(const W* w);
template <> HEADS_AVX2 inline __m256 load8(const Bf16* w) {
    const __m128i bits = _mm_loadu_si128(reinterpret_cast<const __m128i*>(w));
    return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(bits), 16));
}
template <> HEADS_AVX2 inline __m256 load8(const F16* w) {
    return _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(w)));
}
template <> HEADS_AVX2 inline __m256 load8(const float* w) { return _mm256_loadu_ps(w); }

inline float to_f32(Bf16 w) { return bf16_to_f32(w.bits); }
inline float to_f32(F16 w) { return f16_to_f32(w.bits); }
inline float to_f32(float w) { return w; }

HEADS_AVX2 inline float sum8(__m256 v) {
    const __m128 half = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    const __m128 pair = _mm_add_ps(half, _mm_movehl_ps(half, half));
    return _mm_cvtss_f32(_mm_add_ss(pair, _mm_movehdup_ps(pair)));
}

// One weight row against C rows of x (C <= 2): C dot products of length
// `in`, each over four interleaved 8-lane accumulators (four FMA chains in
// flight), then 8-lane steps, then a scalar tail; written or added to y.
// One row at a time keeps the weights a single sequential stream, which
// AMD's prefetcher follows (four_rows_at_once says where four are read).
template <class W, int C>
HEADS_AVX2 void dot_row(const W* w, std::int64_t in, const float* x, std::int64_t ldx, float* y, std::int64_t ldy,
                        bool accumulate) {
    constexpr int U = 4;
    __m256 acc[C][U];
    for (int c = 0; c < C; ++c)
        for (int u = 0; u < U; ++u) acc[c][u] = _mm256_setzero_ps();
    std::int64_t k = 0;
    for (; k + 8 * U <= in; k += 8 * U)
        for (int u = 0; u < U; ++u) {
            const __m256 wv = load8(w + k + 8 * u);
            for (int c = 0; c < C; ++c) acc[c][u] = _mm256_fmadd_ps(wv, _mm256_loadu_ps(x + c * ldx + k + 8 * u), acc[c][u]);
        }
    for (; k + 8 <= in; k += 8) {
        const __m256 wv = load8(w + k);
        for (int c = 0; c < C; ++c) acc[c][0] = _mm256_fmadd_ps(wv, _mm256_loadu_ps(x + c * ldx + k), acc[c][0]);
    }
    const std::int64_t body = k;
    for (int c = 0; c < C; ++c) {
        float sum = sum8(_mm256_add_ps(_mm256_add_ps(acc[c][0], acc[c][1]), _mm256_add_ps(acc[c][2], acc[c][3])));
        for (k = body; k < in; ++k) sum += to_f32(w[k]) * x[c * ldx + k];
        float& out = y[c * ldy];
        out = accumulate ? out + sum : sum;
    }
}

// Decode's case, one row of x, R weight rows at once: each load of x serves
// R rows. Two accumulators per row; 8-lane steps, then a scalar tail.
template <class W, int R>
HEADS_AVX2 void dot_rows(const W* w, std::int64_t in, const float* x, float* y, bool accumulate) {
    __m256 acc[R][2];
    for (int r = 0; r < R; ++r) acc[r][0] = acc[r][1] = _mm256_setzero_ps();
    std::int64_t k = 0;
    for (; k + 16 <= in; k += 16) {
        const __m256 x0 = _mm256_loadu_ps(x + k), x1 = _mm256_loadu_ps(x + k + 8);
        for (int r = 0; r < R; ++r) {
            acc[r][0] = _mm256_fmadd_ps(load8(w + r * in + k), x0, acc[r][0]);
            acc[r][1] = _mm256_fmadd_ps(load8(w + r * in + k + 8), x1, acc[r][1]);
        }
    }
    for (; k + 8 <= in; k += 8) {
        const __m256 xv = _mm256_loadu_ps(x + k);
        for (int r = 0; r < R; ++r) acc[r][0] = _mm256_fmadd_ps(load8(w + r * in + k), xv, acc[r][0]);
    }
    const std::int64_t body = k;
    for (int r = 0; r < R; ++r) {
        float sum = sum8(_mm256_add_ps(acc[r][0], acc[r][1]));
        for (k = body; k < in; ++k) sum += to_f32(w[r * in + k]) * x[k];
        y[r] = accumulate ? y[r] + sum : sum;
    }
}

// Whether decode (one row of x) reads four weight rows at once. Intel's
// prefetchers follow several row streams, and four rows sharing each load
// of x decoded 6-13% faster there (a Xeon with AVX512-BF16); on AMD's Zen 3
// four interleaved rows streamed ~30% slower than one, so AMD keeps one.
bool four_rows_at_once() {
    static const bool four = __builtin_cpu_is("intel");
    return four;
}

// out[0, n) = w[0, n) as f32.
template <class W> HEADS_AVX2 void widen(const W* w, std::int64_t n, float* out) {
    std::int64_t k = 0;
    for (; k + 8 <= n; k += 8) _mm256_storeu_ps(out + k, load8(w + k));
    for (; k < n; ++k) out[k] = to_f32(w[k]);
}

// Decode's f32 case on AMD (one row of x, f32 rows): dot_row with no load
// that spans two cache lines. A safetensors file's tensors start wherever
// its JSON header ends (the TinyLlama-shape bench file's 48 bytes past a
// line), so dot_row's 32-byte loads of such rows split every other line;
// here a scalar head brings w to a 32-byte boundary, and x sits at w's
// offset within 32 bytes (XAtRowOffset), so that its loads are whole too.
// Alternated with dot_row token by token in engine_bench on Zen 5
// (2026-12-07), it decoded the TinyLlama shape's f32 file 13-17% faster at
// -t 1 and -t 2 (4 runs, 25-29 of 30 tokens faster in each; 8-20% in 8
// runs of a scratch version), and the 168M file, whose rows lie 32 bytes
// past a line, within 1% (100 tokens a run). A whole-line AVX-512 form of
// it changed sign from hour to hour (bench/HISTORY.md). The sums' grouping
// follows the row's offset (as in dot_row_bf16), never the thread count.
HEADS_AVX2 void dot_row_f32_whole_loads(const float* w, std::int64_t in, const float* x, float* y, bool accumulate) {
    const auto past = std::int64_t(reinterpret_cast<std::uintptr_t>(w) % 32);
    const std::int64_t head = std::min(in, (32 - past) % 32 / std::int64_t(sizeof(float)));
    float sum = accumulate ? *y : 0.0f;
    for (std::int64_t k = 0; k < head; ++k) sum += w[k] * x[k];
    *y = sum;
    dot_row<float, 1>(w + head, in - head, x + head, 0, y, 0, true);
}

// One row of x placed at each offset within 32 bytes at which a matrix's
// parts start (every row of a part starts there when a row is a whole
// number of 32 bytes; in practice one offset per file): x itself where it
// already sits at that offset, else a copy.
class XAtRowOffset {
public:
    XAtRowOffset(const RowMatrix& w, const float* x) {
        for (const Tensor& part : w.parts()) {
            const std::size_t slot = slot_of(part.bytes().data());
            if (starts_[slot]) continue;
            if (slot_of(x) == slot) {
                starts_[slot] = x;
                continue;
            }
            std::vector<float>& copy = copies_[slot];
            copy.resize(std::size_t(w.in()) + 16);  // room to move the start by up to 31 bytes
            const auto boundary = (reinterpret_cast<std::uintptr_t>(copy.data()) + 31) & ~std::uintptr_t(31);
            float* at = reinterpret_cast<float*>(boundary) + slot;
            std::copy(x, x + w.in(), at);
            starts_[slot] = at;
        }
    }
    // x at the offset of rows that start at `rows`.
    const float* at(const std::byte* rows) const { return starts_[slot_of(rows)]; }

private:
    static constexpr std::size_t kSlots = 32 / sizeof(float);
    static std::size_t slot_of(const void* p) { return reinterpret_cast<std::uintptr_t>(p) % 32 / sizeof(float); }
    std::array<std::vector<float>, kSlots> copies_;
    std::array<const float*, kSlots> starts_{};
};

// Whether row_gemv runs dot_row_f32_whole_loads: f32 rows a whole number of
// 32 bytes long (so a part's rows share one offset), one row of x, on CPUs
// that read one row at a time (four_rows_at_once).
bool f32_whole_loads(const RowGemvArgs& a, const RowMatrix& w) {
    return a.rows == 1 && w.dtype() == DType::F32 && w.in() % 8 == 0 && !four_rows_at_once();
}

HEADS_AVX2 void gemv_block_f32_whole_loads(const RowGemvArgs& a, const RowMatrix::Block& blk, std::int64_t in,
                                           const XAtRowOffset& x) {
    const float* x_at = x.at(blk.rows);
    for (std::int64_t r = 0; r < blk.count; ++r)
        dot_row_f32_whole_loads(reinterpret_cast<const float*>(blk.rows) + r * in, in, x_at, a.y + blk.first + r,
                                a.accumulate);
}

// One block of output rows, each row against every row of x.
template <class W> HEADS_AVX2 void gemv_block(const RowGemvArgs& a, const RowMatrix::Block& blk, std::int64_t in) {
    if (a.rows == 1 && four_rows_at_once()) {
        const W* rows = reinterpret_cast<const W*>(blk.rows);
        std::int64_t r = 0;
        for (; r + 4 <= blk.count; r += 4) dot_rows<W, 4>(rows + r * in, in, a.x, a.y + blk.first + r, a.accumulate);
        for (; r < blk.count; ++r) dot_rows<W, 1>(rows + r * in, in, a.x, a.y + blk.first + r, a.accumulate);
        return;
    }
    for (std::int64_t r = 0; r < blk.count; ++r) {
        const W* w = reinterpret_cast<const W*>(blk.rows) + r * in;
        float* y = a.y + blk.first + r;
        std::int64_t c = 0;
        for (; c + 2 <= a.rows; c += 2) dot_row<W, 2>(w, in, a.x + c * a.ldx, a.ldx, y + c * a.ldy, a.ldy, a.accumulate);
        if (c < a.rows) dot_row<W, 1>(w, in, a.x + c * a.ldx, a.ldx, y + c * a.ldy, a.ldy, a.accumulate);
    }
}

// bf16 arithmetic: target attributes per function, so the rest of the file
// (and the library) runs on CPUs without AVX-512.
#define HEADS_AVX512_BF16 __attribute__((target("avx512f,avx512bf16,avx512bw,avx512vl")))

// 32 bf16 values at p, lanes at and past `count` zero (no read past them).
HEADS_AVX512_BF16 inline __m512bh load32_bf16(const std::uint16_t* p, std::int64_t count = 32) {
    const __m512i bits = count >= 32 ? _mm512_loadu_si512(p) : _mm512_maskz_loadu_epi16(__mmask32((1u << count) - 1), p);
    return reinterpret_cast<const __m512bh&>(bits);
}

// The sum of 16 lanes in a fixed order, through memory: GCC 12's lane
// shuffles and extracts (_mm512_reduce_add_ps's too) start from an
// "undefined" register it then warns about; once per output, it costs nothing.
HEADS_AVX512_BF16 inline float sum16(__m512 v) {
    alignas(64) float lanes[16];
    _mm512_store_ps(lanes, v);
    const __m128 quad = _mm_add_ps(_mm_add_ps(_mm_load_ps(lanes), _mm_load_ps(lanes + 8)),
                                   _mm_add_ps(_mm_load_ps(lanes + 4), _mm_load_ps(lanes + 12)));
    const __m128 pair = _mm_add_ps(quad, _mm_movehl_ps(quad, quad));
    return _mm_cvtss_f32(_mm_add_ss(pair, _mm_movehdup_ps(pair)));
}

// How far ahead of its loads dot_row_bf16 asks for the weights (bytes): the
// hardware prefetchers alone kept one row stream at ~60% of the read
// bandwidth on Zen 5; asking 4 KiB ahead (past the row's end, into the
// block's next rows) decoded the TinyLlama shape 7-8% faster at -t 1 and -t 2
// (interleaved A/B, 2026-12-06), the 168M model within its noise.
constexpr std::int64_t kBf16PrefetchBytes = 4096;

// The bf16 values from w to its next 64-byte boundary (0 when w is on one),
// at most `in`. A safetensors file's tensors start wherever its JSON header
// ends (the bench models' at 8-24 bytes past a cache line), so without this
// every 64-byte load of weights would span two cache lines.
inline std::int64_t bf16_to_line_boundary(const std::uint16_t* w, std::int64_t in) {
    const auto past_line = std::int64_t(reinterpret_cast<std::uintptr_t>(w) & 63);
    return std::min(in, ((64 - past_line) & 63) / std::int64_t(sizeof(std::uint16_t)));
}

// dot_row in bf16 arithmetic: C dot products of a bf16 weight row with C bf16
// rows of x; each vdpbf16ps adds 32 exact products into 16 f32 lanes, four
// accumulators in flight. A masked head (zero lanes add nothing) brings the
// weights to a cache-line boundary: whole-line loads decoded the TinyLlama
// shape 12-15% faster on Zen 5 (interleaved A/B, 2026-12-06). So the sums'
// grouping follows the row's address: the same weights at another offset in
// a file may differ in the last bit, never with the thread count or C. The
// tail (in % 32) is masked too. Each 64-byte line of weights is prefetched
// kBf16PrefetchBytes ahead (a prefetch never faults, past the mapping too;
// the address is formed as an integer, as it may lie past the row's object).
template <int C>
HEADS_AVX512_BF16 void dot_row_bf16(const std::uint16_t* w, std::int64_t in, const std::uint16_t* x, std::int64_t ldx,
                                    float* y, std::int64_t ldy, bool accumulate) {
    constexpr int U = 4;
    __m512 acc[C][U];
    for (int c = 0; c < C; ++c)
        for (int u = 0; u < U; ++u) acc[c][u] = _mm512_setzero_ps();
    std::int64_t k = bf16_to_line_boundary(w, in);
    if (k > 0) {
        const __m512bh wv = load32_bf16(w, k);
        for (int c = 0; c < C; ++c) acc[c][1] = _mm512_dpbf16_ps(acc[c][1], wv, load32_bf16(x + c * ldx, k));
    }
    for (; k + 32 * U <= in; k += 32 * U)
        for (int u = 0; u < U; ++u) {
            _mm_prefetch(reinterpret_cast<const char*>(reinterpret_cast<std::uintptr_t>(w + k + 32 * u) + kBf16PrefetchBytes),
                         _MM_HINT_T0);
            const __m512bh wv = load32_bf16(w + k + 32 * u);
            for (int c = 0; c < C; ++c) acc[c][u] = _mm512_dpbf16_ps(acc[c][u], wv, load32_bf16(x + c * ldx + k + 32 * u));
        }
    for (; k < in; k += 32) {
        const std::int64_t count = std::min<std::int64_t>(32, in - k);
        const __m512bh wv = load32_bf16(w + k, count);
        for (int c = 0; c < C; ++c) acc[c][0] = _mm512_dpbf16_ps(acc[c][0], wv, load32_bf16(x + c * ldx + k, count));
    }
    for (int c = 0; c < C; ++c) {
        const float sum = sum16(_mm512_add_ps(_mm512_add_ps(acc[c][0], acc[c][1]), _mm512_add_ps(acc[c][2], acc[c][3])));
        float& out = y[c * ldy];
        out = accumulate ? out + sum : sum;
    }
}

// Decode's case, one row of x: R weight rows at once against it, so each
// load of x serves R rows and R streams of weights are in flight; two
// accumulators per row, the tail (in % 64) 32 at a time, masked at the end.
template <int R>
HEADS_AVX512_BF16 void dot_rows_bf16(const std::uint16_t* w, std::int64_t in, const std::uint16_t* x, float* y,
                                     bool accumulate) {
    __m512 acc[R][2];
    for (int r = 0; r < R; ++r) acc[r][0] = acc[r][1] = _mm512_setzero_ps();
    std::int64_t k = 0;
    for (; k + 64 <= in; k += 64) {
        const __m512bh x0 = load32_bf16(x + k), x1 = load32_bf16(x + k + 32);
        for (int r = 0; r < R; ++r) {
            acc[r][0] = _mm512_dpbf16_ps(acc[r][0], load32_bf16(w + r * in + k), x0);
            acc[r][1] = _mm512_dpbf16_ps(acc[r][1], load32_bf16(w + r * in + k + 32), x1);
        }
    }
    for (; k < in; k += 32) {
        const std::int64_t count = std::min<std::int64_t>(32, in - k);
        const __m512bh xv = load32_bf16(x + k, count);
        for (int r = 0; r < R; ++r) acc[r][0] = _mm512_dpbf16_ps(acc[r][0], load32_bf16(w + r * in + k, count), xv);
    }
    for (int r = 0; r < R; ++r) {
        const float sum = sum16(_mm512_add_ps(acc[r][0], acc[r][1]));
        y[r] = accumulate ? y[r] + sum : sum;
    }
}

HEADS_AVX512_BF16 void gemv_block_bf16(const RowGemvArgs& a, const RowMatrix::Block& blk, std::int64_t in) {
    const auto* rows = reinterpret_cast<const std::uint16_t*>(blk.rows);
    if (a.rows == 1 && four_rows_at_once()) {
        std::int64_t r = 0;
        for (; r + 4 <= blk.count; r += 4) dot_rows_bf16<4>(rows + r * in, in, a.x_bf16, a.y + blk.first + r, a.accumulate);
        for (; r < blk.count; ++r) dot_rows_bf16<1>(rows + r * in, in, a.x_bf16, a.y + blk.first + r, a.accumulate);
        return;
    }
    for (std::int64_t r = 0; r < blk.count; ++r) {
        const auto* w = reinterpret_cast<const std::uint16_t*>(blk.rows) + r * in;
        float* y = a.y + blk.first + r;
        std::int64_t c = 0;
        for (; c + 2 <= a.rows; c += 2)
            dot_row_bf16<2>(w, in, a.x_bf16 + c * a.ldx, a.ldx, y + c * a.ldy, a.ldy, a.accumulate);
        if (c < a.rows) dot_row_bf16<1>(w, in, a.x_bf16 + c * a.ldx, a.ldx, y + c * a.ldy, a.ldy, a.accumulate);
    }
}

// Blocks are handed out one at a time (WorkPool): a thread that falls behind
// leaves its share to the others; a static split left ~7% of decode time
// waiting at barriers even on a quiet machine.
template <class Block> void gemv(WorkPool& pool, const RowMatrix& m, Block block) {
    const auto& blocks = m.blocks();
    pool.run(std::int64_t(blocks.size()), [&](std::int64_t b, int) { block(blocks[std::size_t(b)]); });
}

}  // namespace

RowMatrix::RowMatrix(std::vector<Tensor> parts) : parts_(std::move(parts)) {
    if (parts_.empty()) throw std::invalid_argument("RowMatrix: no parts");
    in_ = parts_[0].dim(1);
    dtype_ = parts_[0].dtype();
    if (dtype_ != DType::BF16 && dtype_ != DType::F16 && dtype_ != DType::F32)
        throw std::invalid_argument(fmt::format("RowMatrix: {} rows; BF16, F16 or F32 expected", dtype_name(dtype_)));
    for (const Tensor& part : parts_) {
        if (part.rank() != 2 || part.dim(1) != in_ || part.dtype() != dtype_)
            throw std::invalid_argument(fmt::format("RowMatrix: part {} {} does not match [*, {}] {}", shape_string(part.shape()),
                                                    dtype_name(part.dtype()), in_, dtype_name(dtype_)));
        const std::size_t row_bytes = std::size_t(in_) * dtype_size(dtype_);
        const std::int64_t block_rows = std::max(kMinBlockRows, kBlockBytes / std::max<std::int64_t>(1, std::int64_t(row_bytes)));
        for (std::int64_t r = 0; r < part.dim(0); r += block_rows)
            blocks_.push_back({part.bytes().data() + std::size_t(r) * row_bytes, out_ + r,
                               std::min(block_rows, part.dim(0) - r)});
        out_ += part.dim(0);
    }
}

std::size_t RowMatrix::nbytes() const {
    std::size_t total = 0;
    for (const Tensor& part : parts_) total += part.nbytes();
    return total;
}

bool row_gemv_supported() {
    // F16C from CPUID leaf 1 (ECX bit 29): clang has no __builtin_cpu_supports("f16c").
    const auto f16c = [] {
        unsigned eax = 0, ebx = 0, ecx = 0, edx = 0;
        return __get_cpuid(1, &eax, &ebx, &ecx, &edx) != 0 && (ecx & bit_F16C) != 0;
    };
    static const bool supported = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") && f16c();
    return supported;
}

bool row_gemv_bf16_supported() {
    static const bool supported = __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
                                  __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512bf16");
    return supported;
}

void row_gemv(WorkPool& pool, const RowGemvArgs& args, const RowMatrix& w) {
    if (args.rows < 1 || args.rows > kGemvMaxRows)
        throw std::invalid_argument(fmt::format("row_gemv: {} rows (1 to {})", args.rows, kGemvMaxRows));
    const std::int64_t in = w.in();
    if (args.x_bf16) {
        if (w.dtype() != DType::BF16 || !row_gemv_bf16_supported())
            throw std::invalid_argument(fmt::format("row_gemv: bf16 arithmetic needs BF16 rows ({}) and AVX512-BF16 ({})",
                                                    dtype_name(w.dtype()), row_gemv_bf16_supported() ? "present" : "absent"));
        return gemv(pool, w, [&](const RowMatrix::Block& blk) { gemv_block_bf16(args, blk, in); });
    }
    if (f32_whole_loads(args, w)) {
        const XAtRowOffset x(w, args.x);
        return gemv(pool, w, [&](const RowMatrix::Block& blk) { gemv_block_f32_whole_loads(args, blk, in, x); });
    }
    switch (w.dtype()) {
    case DType::BF16: return gemv(pool, w, [&](const RowMatrix::Block& blk) { gemv_block<Bf16>(args, blk, in); });
    case DType::F16: return gemv(pool, w, [&](const RowMatrix::Block& blk) { gemv_block<F16>(args, blk, in); });
    default: return gemv(pool, w, [&](const RowMatrix::Block& blk) { gemv_block<float>(args, blk, in); });
    }
}

void round_to_bf16(std::uint16_t* out, const float* x, std::int64_t rows, std::int64_t in, std::int64_t ldx) {
    for (std::int64_t r = 0; r < rows; ++r)
        for (std::int64_t k = 0; k < in; ++k) out[r * in + k] = f32_to_bf16(x[r * ldx + k]);
}

void row_matrix_to_f32(float* out, const RowMatrix& w, std::int64_t first, std::int64_t count) {
    const std::int64_t in = w.in();
    std::int64_t part_first = 0;
    for (const Tensor& part : w.parts()) {
        const std::int64_t from = std::max(first, part_first), to = std::min(first + count, part_first + part.dim(0));
        if (from < to) {
            const std::byte* rows = part.bytes().data() + std::size_t((from - part_first) * in) * dtype_size(w.dtype());
            float* target = out + (from - first) * in;
            const std::int64_t n = to - from;
            const std::size_t row_bytes = std::size_t(in) * dtype_size(w.dtype());
#pragma omp parallel for schedule(static)
            for (std::int64_t r = 0; r < n; ++r) {
                const std::byte* row = rows + std::size_t(r) * row_bytes;
                switch (w.dtype()) {
                case DType::BF16: widen(reinterpret_cast<const Bf16*>(row), in, target + r * in); break;
                case DType::F16: widen(reinterpret_cast<const F16*>(row), in, target + r * in); break;
                default: convert_to_f32(target + r * in, w.dtype(), row, std::size_t(in));
                }
            }
        }
        part_first += part.dim(0);
    }
}

}  // namespace heads
