#pragma once
// y = x · Wᵀ for a weight matrix W [out, in] (torch.nn.Linear's order), with W
// kept in the form this CPU multiplies fastest (WeightFormat): on AVX2 and
// AVX-512 CPUs the file's own rows, read by an own GEMV for a few rows of x
// (ops/row_gemv.hpp) and by oneDNN's GEMM over the same rows (a transposed
// weights descriptor) for more; on CPUs without AVX2, packed once into
// oneDNN's layout. Primitives come from the Context's cache: one per (rows,
// in, out, compute type), rows rounded up to a multiple of kRowBucket above
// kRowBucket, so decoding (rows = 1) and repeated prefill lengths never
// create one again.

#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include <dnnl.hpp>

#include "ops/context.hpp"
#include "ops/row_gemv.hpp"
#include "tensor/tensor.hpp"

namespace heads {

// How W is kept for multiplying.
enum class WeightFormat {
    onednn_f32,  // oneDNN's layout, f32 (CPUs without AVX2)
    rows_f32,    // [out, in] rows, f32 arithmetic on f32, bf16 or f16 values as the file
                 // holds them
    rows_bf16,   // [out, in] rows in bf16: bf16 arithmetic where Context::bf16_arithmetic(),
                 // else f32 arithmetic on the bf16 values
};
// The format for `wanted` arithmetic on this CPU.
WeightFormat weight_format(Context& ctx, ComputeType wanted);
bool is_rows(WeightFormat format);
ComputeType compute_of(WeightFormat format);
const char* format_name(WeightFormat format);  // "onednn-f32", "rows-bf16", ...

class PackedMatrix {
public:
    PackedMatrix() = default;
    // Wraps memory already in `desc`'s layout (e.g. mapped from a weight cache file).
    PackedMatrix(std::int64_t in, std::int64_t out, ComputeType compute, const dnnl::memory::desc& desc,
                 const void* data, std::shared_ptr<const void> owner);
    // W as rows, multiplied in `compute` arithmetic (bf16: BF16 rows, bf16
    // arithmetic where Context::bf16_arithmetic(), else f32); desc() is then
    // the plain [out, in] layout of the rows' dtype.
    PackedMatrix(RowMatrix rows, ComputeType compute);

    std::int64_t in() const { return in_; }
    std::int64_t out() const { return out_; }
    ComputeType compute() const { return compute_; }
    const dnnl::memory::desc& desc() const { return desc_; }
    // The data when it is one block of desc().get_size() bytes; rows may be
    // several blocks (views of q, k and v): see pieces().
    const void* data() const { return data_; }
    std::size_t nbytes() const { return rows_.empty() ? desc_.get_size() : rows_.nbytes(); }
    // The bytes of W in desc()'s layout, as one or more consecutive pieces.
    std::vector<std::span<const std::byte>> pieces() const;
    std::uint64_t layout_hash() const { return layout_hash_; }
    bool empty() const { return data_ == nullptr; }
    // The rows when W is kept as rows, else null.
    const RowMatrix* rows() const { return rows_.empty() ? nullptr : &rows_; }

private:
    std::int64_t in_ = 0, out_ = 0;
    ComputeType compute_ = ComputeType::f32;
    dnnl::memory::desc desc_;
    const void* data_ = nullptr;
    std::shared_ptr<const void> owner_;
    std::uint64_t layout_hash_ = 0;
    RowMatrix rows_;
};

// W = the parts stacked along `out` (each [out_i, in]; F32, BF16 or F16) in
// `format`: repacked for oneDNN formats; for rows formats the parts are used
// in place where packing_copies() says they can be, else converted into one
// block of f32 (rows_f32) or bf16 (rows_bf16).
PackedMatrix pack_matrix(Context& ctx, std::span<const Tensor> parts, WeightFormat format);
// Whether pack_matrix() makes new data (rather than views of the parts): only
// then is the result worth keeping in a weight cache.
bool packing_copies(std::span<const Tensor> parts, WeightFormat format);

// Whether `w` holds, in its layout and type, the values of `parts` stacked
// (as pack_matrix() makes them), checked at a few elements spread over the
// matrix, its corners included: a cheap test that matrices kept apart from
// the weights (a weight cache file) were made from these weights and not
// from others of the same shape.
bool made_from(const PackedMatrix& w, std::span<const Tensor> parts);

// A stable hash of a memory descriptor's layout (dims, type, blocking).
std::uint64_t layout_hash(const dnnl::memory::desc& desc);

inline constexpr std::int64_t kRowBucket = 16;
// The rows a matmul over `rows` rows really computes: buffers passed to
// matmul() must hold this many rows (the extra rows are scratch).
inline std::int64_t padded_rows(std::int64_t rows) {
    return rows <= kRowBucket ? rows : (rows + kRowBucket - 1) / kRowBucket * kRowBucket;
}

struct MatmulArgs {
    float* y;            // [padded_rows(rows), out]
    const float* x;      // [padded_rows(rows), in]
    std::int64_t rows;   // rows that matter
    bool accumulate = false;  // y += x · Wᵀ instead of y = x · Wᵀ
};

void matmul(Context& ctx, const MatmulArgs& args, const PackedMatrix& w);

// Small f32 blocks with leading dimensions: c[m, n] (+)= a[m, k] · b, where b
// is [k, n] or, transposed, [n, k] rows. Runs on the calling thread when called
// inside an OpenMP parallel region, so independent blocks run in parallel.
// Call ctx.gemm_primitive() for the variants used before the region.
struct GemmArgs {
    float* c;            // [m, n], rows ldc apart
    std::int64_t ldc;
    const float* a;      // [m, k], rows lda apart
    std::int64_t lda;
    const float* b;      // [k, n], or [n, k] when b_transposed; rows ldb apart
    std::int64_t ldb;
    std::int64_t m, n, k;
    bool b_transposed = false;
    bool accumulate = false;
};

void gemm(const dnnl::matmul& primitive, dnnl::engine& engine, dnnl::stream& stream, const GemmArgs& args);

}  // namespace heads
