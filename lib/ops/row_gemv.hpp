#pragma once
// y = x · Wᵀ for a few rows of x (decode, short drafts) straight from the
// weight file's [out, in] rows, in one of two arithmetics:
// - f32: f32, bf16 or f16 weights widened to f32 in registers (exact: f32
//   arithmetic on the file's values), AVX2/FMA/F16C (row_gemv_supported());
//   the kernel streams 2 bytes per bf16 or f16 weight where an f32 copy would
//   stream 4. On AVX-512 CPUs too: an AVX-512 f32 variant was no faster, the
//   weights' stream being the limit. For f32 rows and one row of x (decode),
//   no load spans two cache lines: a scalar head brings each row to a
//   32-byte boundary and x is read from a copy at the rows' offset.
// - bf16: bf16 weights against x rounded to bf16, 32 products per vdpbf16ps,
//   summed in f32, AVX512-BF16 (row_gemv_bf16_supported()): what oneDNN's
//   bf16 matmul computes, at the weights' stream speed.
// One weight row at a time against up to two rows of x; the pool's threads
// take blocks of output rows one at a time. Each output element is summed by
// one thread in a fixed order, so results do not depend on -t.

#include <cstdint>
#include <span>
#include <vector>

#include "ops/work_pool.hpp"
#include "tensor/tensor.hpp"

namespace heads {

// W [out, in]: row blocks stacked along `out` (q, k and v rows; gate and up
// rows), each a [rows_i, in] Tensor of one dtype, F32, BF16 or F16.
class RowMatrix {
public:
    RowMatrix() = default;
    // The parts are kept (views keep their files mapped).
    explicit RowMatrix(std::vector<Tensor> parts);

    std::int64_t in() const { return in_; }
    std::int64_t out() const { return out_; }
    DType dtype() const { return dtype_; }
    std::size_t nbytes() const;
    bool empty() const { return parts_.empty(); }
    const std::vector<Tensor>& parts() const { return parts_; }

    // Consecutive output rows of one part, the unit of work of a thread:
    // about kBlockBytes of weights, at least kMinBlockRows rows. Blocks of
    // 16 rows (8-32 KiB) decoded 20-30% slower: a hand-off through the pool
    // per block, and streams too short for the prefetcher to run ahead.
    struct Block {
        const std::byte* rows;  // [count, in] of dtype()
        std::int64_t first;     // index of its first row in `out`
        std::int64_t count;
    };
    static constexpr std::int64_t kBlockBytes = std::int64_t(256) << 10;
    static constexpr std::int64_t kMinBlockRows = 16;
    const std::vector<Block>& blocks() const { return blocks_; }

private:
    std::vector<Tensor> parts_;
    std::vector<Block> blocks_;
    std::int64_t in_ = 0, out_ = 0;
    DType dtype_ = DType::BF16;
};

// The rows of x worth a GEMV: above this, oneDNN's GEMM over W (widened to
// f32 a panel at a time when it is bf16 or f16) is faster.
inline constexpr std::int64_t kGemvMaxRows = 8;

struct RowGemvArgs {
    float* y;            // [rows, out], row stride ldy
    std::int64_t ldy;
    const float* x;      // [rows, in], row stride ldx (f32 arithmetic)
    std::int64_t ldx;
    std::int64_t rows;   // 1 .. kGemvMaxRows
    bool accumulate = false;  // y += x · Wᵀ
    // bf16 arithmetic when set (BF16 rows, row_gemv_bf16_supported()): x
    // rounded to bf16 (round_to_bf16), [rows, in] row stride ldx, read instead of x.
    const std::uint16_t* x_bf16 = nullptr;
};

// Whether this CPU runs row_gemv in f32 arithmetic (AVX2, FMA and F16C).
bool row_gemv_supported();
// Whether it runs it in bf16 arithmetic (AVX512F, BW, VL and BF16).
bool row_gemv_bf16_supported();

void row_gemv(WorkPool& pool, const RowGemvArgs& args, const RowMatrix& w);

// out [rows, in] = x [rows, in] (row stride ldx) rounded to bf16 (f32_to_bf16:
// nearest even, as oneDNN rounds a bf16 matmul's f32 input).
void round_to_bf16(std::uint16_t* out, const float* x, std::int64_t rows, std::int64_t in, std::int64_t ldx);

// Rows first .. first + count of W as f32 into out [count, in] (OpenMP over rows).
void row_matrix_to_f32(float* out, const RowMatrix& w, std::int64_t first, std::int64_t count);

}  // namespace heads
