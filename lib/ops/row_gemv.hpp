#pragma once
// y = x · Wᵀ for a few rows of x (decode, short drafts) straight from the
// weight file's [out, in] rows, f32, bf16 or f16, widened to f32 in registers
// (exactly: f32 arithmetic on the file's values): the kernel streams 2 bytes
// per bf16 or f16 weight where an f32 copy would stream 4. AVX2/FMA/F16C
// (chosen at run time: row_gemv_supported()). One weight row at a time
// against up to two rows of x; the pool's threads take blocks of output rows
// one at a time. Each output element is summed by one thread in a fixed
// order, so results do not depend on -t.

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

    // Up to kBlockRows consecutive output rows of one part (the unit of work of a thread).
    struct Block {
        const std::byte* rows;  // [count, in] of dtype()
        std::int64_t first;     // index of its first row in `out`
        std::int64_t count;
    };
    static constexpr std::int64_t kBlockRows = 16;
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
    const float* x;      // [rows, in], row stride ldx
    std::int64_t ldx;
    std::int64_t rows;   // 1 .. kGemvMaxRows
    bool accumulate = false;  // y += x · Wᵀ
};

// Whether this CPU runs row_gemv (AVX2, FMA and F16C).
bool row_gemv_supported();

void row_gemv(WorkPool& pool, const RowGemvArgs& args, const RowMatrix& w);

// Rows first .. first + count of W as f32 into out [count, in] (OpenMP over rows).
void row_matrix_to_f32(float* out, const RowMatrix& w, std::int64_t first, std::int64_t count);

}  // namespace heads
