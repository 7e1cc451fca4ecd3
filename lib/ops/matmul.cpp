#include "ops/matmul.hpp"

#include <cstring>
#include <stdexcept>
#include <vector>

#include <fmt/format.h>
#include <oneapi/dnnl/dnnl.h>

namespace heads {
namespace {

using dnnl::memory;
using Tag = memory::format_tag;
using DataType = memory::data_type;

DataType data_type(ComputeType compute) { return compute == ComputeType::bf16 ? DataType::bf16 : DataType::f32; }

DataType onednn_type(DType dtype) {
    switch (dtype) {
    case DType::BF16: return DataType::bf16;
    case DType::F16: return DataType::f16;
    case DType::F32: return DataType::f32;
    default: throw std::invalid_argument(fmt::format("no oneDNN type for {}", dtype_name(dtype)));
    }
}

// FNV-1a over a sequence of 64-bit words.
struct Fnv {
    std::uint64_t h = 1469598103934665603ull;
    void add(std::uint64_t word) {
        for (int i = 0; i < 8; ++i) {
            h ^= (word >> (8 * i)) & 0xff;
            h *= 1099511628211ull;
        }
    }
};

// The source matrix as one contiguous [out, in] array of the compute type.
// Returns a pointer into `owned`, or straight into the single part when no
// conversion is needed.
const void* gather_source(std::span<const Tensor> parts, ComputeType compute, std::vector<std::byte>& owned) {
    const std::int64_t in = parts[0].dim(1);
    if (parts.size() == 1 && parts[0].dtype() == (compute == ComputeType::bf16 ? DType::BF16 : DType::F32))
        return parts[0].bytes().data();
    std::int64_t out = 0;
    for (const auto& part : parts) out += part.dim(0);
    const std::size_t element = compute == ComputeType::bf16 ? 2 : 4;
    owned.resize(std::size_t(out * in) * element);
    std::byte* cursor = owned.data();
    for (const auto& part : parts) {
        const std::size_t count = std::size_t(part.numel());
        if (part.dtype() == (compute == ComputeType::bf16 ? DType::BF16 : DType::F32)) {
            std::memcpy(cursor, part.bytes().data(), part.nbytes());
        } else {
            const std::vector<float> values = part.to_f32();
            if (compute == ComputeType::f32) {
                std::memcpy(cursor, values.data(), count * 4);
            } else {
                auto* target = reinterpret_cast<std::uint16_t*>(cursor);
                for (std::size_t i = 0; i < count; ++i) target[i] = f32_to_bf16(values[i]);
            }
        }
        cursor += count * element;
    }
    return owned.data();
}

dnnl::matmul::primitive_desc make_pd(Context& ctx, std::int64_t rows, std::int64_t in, std::int64_t out,
                                     ComputeType compute, const memory::desc& weights, bool accumulate,
                                     std::int64_t ldy) {
    const memory::desc src({rows, in}, data_type(compute), Tag::ab);
    const memory::desc dst({rows, out}, DataType::f32, memory::dims{ldy, 1});
    dnnl::primitive_attr attr;
    attr.set_scratchpad_mode(dnnl::scratchpad_mode::user);
    if (accumulate) {
        dnnl::post_ops ops;
        ops.append_sum(1.0f);
        attr.set_post_ops(ops);
    }
    return dnnl::matmul::primitive_desc(dnnl::matmul::desc(src, weights, dst), attr, ctx.engine());
}

bool can_make(Context& ctx, std::int64_t rows, std::int64_t in, std::int64_t out, ComputeType compute,
              const memory::desc& weights) {
    try {
        make_pd(ctx, rows, in, out, compute, weights, false, out);
        return true;
    } catch (const dnnl::error&) {
        return false;
    }
}

MatmulEntry make_entry(Context& ctx, const MatmulKey& key, const memory::desc& weights) {
    const auto pd = make_pd(ctx, key.rows, key.in, key.out, key.compute, weights, key.accumulate, key.ldy);
    MatmulEntry entry;
    entry.primitive = dnnl::matmul(pd);
    entry.src = memory(pd.src_desc(), ctx.engine(), nullptr);
    entry.weights = memory(pd.weights_desc(), ctx.engine(), nullptr);
    entry.dst = memory(pd.dst_desc(), ctx.engine(), nullptr);
    entry.scratchpad_size = pd.scratchpad_desc().get_size();
    entry.scratchpad = memory(pd.scratchpad_desc(), ctx.engine(), nullptr);
    return entry;
}

// The cached primitive for `key` (made now if absent) run on src, weights and dst.
void run_matmul(Context& ctx, const MatmulKey& key, const memory::desc& weights_desc, const void* src,
                const void* weights, float* dst) {
    MatmulEntry* cached = ctx.find_matmul(key);
    MatmulEntry& entry = cached ? *cached : ctx.add_matmul(key, make_entry(ctx, key, weights_desc));
    entry.src.set_data_handle(const_cast<void*>(src));
    entry.weights.set_data_handle(const_cast<void*>(weights));
    entry.dst.set_data_handle(dst);
    entry.scratchpad.set_data_handle(ctx.onednn_scratchpad(entry.scratchpad_size));
    const dnnl_exec_arg_t exec_args[] = {
        {DNNL_ARG_SRC, entry.src.get()},
        {DNNL_ARG_WEIGHTS, entry.weights.get()},
        {DNNL_ARG_DST, entry.dst.get()},
        {DNNL_ARG_SCRATCHPAD, entry.scratchpad.get()},
    };
    if (dnnl_primitive_execute(entry.primitive.get(), ctx.stream().get(), 4, exec_args) != dnnl_success)
        throw std::runtime_error(fmt::format("oneDNN matmul [{}, {}] x [{}, {}] failed", key.rows, key.in, key.in, key.out));
}

}  // namespace

std::uint64_t layout_hash(const memory::desc& desc) {
    const dnnl_memory_desc_t& raw = desc.data;
    Fnv fnv;
    fnv.add(std::uint64_t(raw.ndims));
    fnv.add(std::uint64_t(raw.data_type));
    fnv.add(std::uint64_t(raw.format_kind));
    for (int i = 0; i < raw.ndims; ++i) {
        fnv.add(std::uint64_t(raw.dims[i]));
        fnv.add(std::uint64_t(raw.padded_dims[i]));
    }
    if (raw.format_kind == dnnl_blocked) {
        const auto& blocking = raw.format_desc.blocking;
        for (int i = 0; i < raw.ndims; ++i) fnv.add(std::uint64_t(blocking.strides[i]));
        fnv.add(std::uint64_t(blocking.inner_nblks));
        for (int i = 0; i < blocking.inner_nblks; ++i) {
            fnv.add(std::uint64_t(blocking.inner_blks[i]));
            fnv.add(std::uint64_t(blocking.inner_idxs[i]));
        }
    }
    fnv.add(std::uint64_t(raw.extra.flags));
    return fnv.h;
}

PackedMatrix::PackedMatrix(std::int64_t in, std::int64_t out, ComputeType compute, const memory::desc& desc,
                           const void* data, std::shared_ptr<const void> owner)
    : in_(in), out_(out), compute_(compute), desc_(desc), data_(data), owner_(std::move(owner)),
      layout_hash_(heads::layout_hash(desc)) {
    if (desc.dims() != memory::dims{in, out})
        throw std::invalid_argument(fmt::format("packed matrix layout is not [{}, {}]", in, out));
}

PackedMatrix::PackedMatrix(RowMatrix rows, ComputeType compute)
    : in_(rows.in()), out_(rows.out()), compute_(compute), desc_({rows.in(), rows.out()}, onednn_type(rows.dtype()), Tag::ba),
      data_(rows.parts().at(0).bytes().data()), layout_hash_(heads::layout_hash(desc_)), rows_(std::move(rows)) {
    if (compute == ComputeType::bf16 && rows_.dtype() != DType::BF16)
        throw std::invalid_argument(fmt::format("bf16 arithmetic on {} rows", dtype_name(rows_.dtype())));
}

std::vector<std::span<const std::byte>> PackedMatrix::pieces() const {
    if (rows_.empty()) return {{static_cast<const std::byte*>(data_), desc_.get_size()}};
    std::vector<std::span<const std::byte>> pieces;
    for (const Tensor& part : rows_.parts()) pieces.push_back(part.bytes());
    return pieces;
}

// The file's rows wherever heads' row GEMV runs: decode streams each weight
// once, at the width the file holds it, and nothing is packed or cached. On
// AVX-512 CPUs oneDNN's packed layout decoded at 0.6x of that (a packed copy
// beside the mapped file, more memory, a packing pass on first start).
WeightFormat weight_format(Context&, ComputeType wanted) {
    if (!row_gemv_supported()) return WeightFormat::onednn_f32;
    return wanted == ComputeType::bf16 ? WeightFormat::rows_bf16 : WeightFormat::rows_f32;
}

bool is_rows(WeightFormat format) { return format == WeightFormat::rows_f32 || format == WeightFormat::rows_bf16; }

ComputeType compute_of(WeightFormat format) {
    return format == WeightFormat::rows_bf16 ? ComputeType::bf16 : ComputeType::f32;
}

const char* format_name(WeightFormat format) {
    switch (format) {
    case WeightFormat::onednn_f32: return "onednn-f32";
    case WeightFormat::rows_f32: return "rows-f32";
    case WeightFormat::rows_bf16: return "rows-bf16";
    }
    return "?";
}

namespace {

DType row_dtype(WeightFormat format) { return format == WeightFormat::rows_bf16 ? DType::BF16 : DType::F32; }

// The parts as rows: views when packing_copies() allows, else one block of
// the format's dtype converted by gather_source.
PackedMatrix row_matrix(std::span<const Tensor> parts, WeightFormat format) {
    if (!packing_copies(parts, format))
        return PackedMatrix(RowMatrix(std::vector<Tensor>(parts.begin(), parts.end())), compute_of(format));
    std::int64_t out = 0;
    for (const Tensor& part : parts) out += part.dim(0);
    std::vector<std::byte> converted;
    gather_source(parts, compute_of(format), converted);
    return PackedMatrix(RowMatrix({Tensor::copy_of(row_dtype(format), {out, parts[0].dim(1)}, converted)}),
                        compute_of(format));
}

// y = x · Wᵀ for more rows than a GEMV is worth, in bf16 arithmetic: oneDNN's
// bf16 matmul straight over each part's bf16 rows (a transposed weights
// descriptor, nothing packed) into its columns of y; x_bf16 is x rounded,
// [padded_rows(rows), in].
void rows_matmul_bf16(Context& ctx, const MatmulArgs& args, const std::uint16_t* x_bf16, const RowMatrix& w) {
    const std::int64_t rows = padded_rows(args.rows), in = w.in();
    std::int64_t first = 0;
    for (const Tensor& part : w.parts()) {
        const memory::desc weights({in, part.dim(0)}, DataType::bf16, Tag::ba);  // [out_i, in] row-major
        const MatmulKey key{rows, in, part.dim(0), ComputeType::bf16, args.accumulate, layout_hash(weights), w.out()};
        run_matmul(ctx, key, weights, x_bf16, part.bytes().data(), args.y + first);
        first += part.dim(0);
    }
    ctx.stream().wait();
}

// y = x · Wᵀ for more rows than a GEMV is worth, in f32 arithmetic: oneDNN's
// f32 GEMM with W transposed: f32 rows straight from each part; bf16 and f16
// rows widened to f32 a panel of output rows at a time into scratch (O(in·out)
// work against O(rows·in·out)), each panel multiplied into its columns of y.
void rows_matmul(Context& ctx, const MatmulArgs& args, const RowMatrix& w) {
    const std::int64_t in = w.in(), out = w.out();
    const dnnl::matmul& primitive = ctx.gemm_primitive(true, args.accumulate);
    auto multiply = [&](const float* rows, std::int64_t first, std::int64_t count) {
        gemm(primitive, ctx.engine(), ctx.stream(),
             {.c = args.y + first, .ldc = out, .a = args.x, .lda = in, .b = rows, .ldb = in, .m = args.rows, .n = count,
              .k = in, .b_transposed = true, .accumulate = args.accumulate});
    };
    if (w.dtype() == DType::F32) {
        std::int64_t first = 0;
        for (const Tensor& part : w.parts()) {
            multiply(part.data<float>().data(), first, part.dim(0));
            first += part.dim(0);
        }
    } else {
        constexpr std::int64_t kPanelBytes = std::int64_t(8) << 20;
        const std::int64_t panel = std::min(out, std::max<std::int64_t>(16, kPanelBytes / (in * 4) / 16 * 16));
        float* scratch = ctx.panel_scratch(std::size_t(panel * in));
        for (std::int64_t first = 0; first < out; first += panel) {
            const std::int64_t count = std::min(panel, out - first);
            row_matrix_to_f32(scratch, w, first, count);
            multiply(scratch, first, count);
        }
    }
    ctx.stream().wait();
}

// The offset, in elements, of element (i, j) of a 2-D blocked layout: the
// inner blocks from the innermost out, then the outer strides (oneDNN's
// memory_desc_wrapper::off_v, which its public API does not offer).
std::int64_t element_offset(const memory::desc& desc, std::int64_t i, std::int64_t j) {
    const dnnl_memory_desc_t& raw = desc.data;
    const dnnl_blocking_desc_t& blocking = raw.format_desc.blocking;
    std::int64_t pos[2] = {i + raw.padded_offsets[0], j + raw.padded_offsets[1]};
    std::int64_t offset = raw.offset0, block_stride = 1;
    for (int b = blocking.inner_nblks - 1; b >= 0; --b) {
        const auto d = std::size_t(blocking.inner_idxs[b]);
        offset += pos[d] % blocking.inner_blks[b] * block_stride;
        pos[d] /= blocking.inner_blks[b];
        block_stride *= blocking.inner_blks[b];
    }
    return offset + pos[0] * blocking.strides[0] + pos[1] * blocking.strides[1];
}

}  // namespace

bool made_from(const PackedMatrix& w, std::span<const Tensor> parts) {
    const std::int64_t in = w.in(), out = w.out();
    std::int64_t rows = 0;
    for (const Tensor& part : parts) {
        if (part.rank() != 2 || part.dim(1) != in) return false;
        rows += part.dim(0);
    }
    if (rows != out || w.empty() || w.desc().data.format_kind != dnnl_blocked) return false;
    const DataType held = w.desc().data_type();  // rows used in place may be f16
    const DType type = held == DataType::bf16 ? DType::BF16 : held == DataType::f16 ? DType::F16 : DType::F32;
    const std::size_t element = dtype_size(type);
    const auto pieces = w.pieces();
    // The byte of w at `offset`, across its pieces.
    const auto byte_at = [&](std::size_t offset) {
        for (const auto& piece : pieces) {
            if (offset < piece.size()) return piece[offset];
            offset -= piece.size();
        }
        return std::byte{0};
    };
    constexpr std::int64_t kSamples = 16;
    for (std::int64_t s = 0; s < kSamples; ++s) {
        // Rows evenly spread from the first to the last, columns from first to last too.
        const std::int64_t r = s * (out - 1) / (kSamples - 1), c = s * (in - 1) / (kSamples - 1);
        std::int64_t local = r;
        std::size_t p = 0;
        while (local >= parts[p].dim(0)) local -= parts[p++].dim(0);
        const Tensor& part = parts[p];
        const std::byte* source = part.bytes().data() + std::size_t(local * in + c) * dtype_size(part.dtype());
        // The element as pack_matrix() makes it: the bytes as they are in the
        // matrix's type, else widened to f32 (and rounded to bf16). Parts of
        // another type than an f16 matrix's cannot have made it.
        std::byte expected[4];
        if (part.dtype() == type) {
            std::memcpy(expected, source, element);
        } else if (type == DType::F16) {
            return false;
        } else {
            const float value = Tensor::view(part.dtype(), {1}, source, nullptr).to_f32()[0];
            if (type == DType::BF16) {
                const std::uint16_t bits = f32_to_bf16(value);
                std::memcpy(expected, &bits, 2);
            } else {
                std::memcpy(expected, &value, 4);
            }
        }
        const std::size_t at = std::size_t(element_offset(w.desc(), c, r)) * element;
        for (std::size_t b = 0; b < element; ++b)
            if (byte_at(at + b) != expected[b]) return false;
    }
    return true;
}

// f32 arithmetic reads f32, bf16 and f16 rows alike (widening them is
// exact); bf16 arithmetic means bf16 weights. The parts of one matrix must
// share a dtype to be used in place.
bool packing_copies(std::span<const Tensor> parts, WeightFormat format) {
    if (!is_rows(format)) return true;
    const DType dtype = parts[0].dtype();
    const bool usable = format == WeightFormat::rows_bf16
                            ? dtype == DType::BF16
                            : dtype == DType::F32 || dtype == DType::BF16 || dtype == DType::F16;
    if (!usable) return true;
    for (const Tensor& part : parts)
        if (part.dtype() != dtype) return true;
    return false;
}

PackedMatrix pack_matrix(Context& ctx, std::span<const Tensor> parts, WeightFormat format) {
    if (parts.empty()) throw std::invalid_argument("pack_matrix: no parts");
    const std::int64_t in = parts[0].dim(1);
    std::int64_t out = 0;
    for (const auto& part : parts) {
        if (part.rank() != 2 || part.dim(1) != in)
            throw std::invalid_argument(fmt::format("pack_matrix: part {} does not have {} columns",
                                                    shape_string(part.shape()), in));
        out += part.dim(0);
    }
    if (is_rows(format)) return row_matrix(parts, format);
    const ComputeType compute = compute_of(format);
    const DataType type = data_type(compute);

    // The layout the decode (rows = 1) kernel prefers, kept only if prefill
    // kernels accept it too; otherwise the file's own [out, in] order.
    memory::desc packed = make_pd(ctx, 1, in, out, compute, memory::desc({in, out}, type, Tag::any), false, out)
                              .weights_desc();
    if (!can_make(ctx, 64, in, out, compute, packed)) packed = memory::desc({in, out}, type, Tag::ba);

    std::vector<std::byte> owned;
    const void* source = gather_source(parts, compute, owned);
    const memory::desc source_desc({in, out}, type, Tag::ba);  // [out, in] row-major = {in, out} "ba"
    std::shared_ptr<std::byte> storage(static_cast<std::byte*>(std::aligned_alloc(64, (packed.get_size() + 63) / 64 * 64)),
                                       [](std::byte* p) { std::free(p); });
    if (!storage) throw std::bad_alloc();
    memory from(source_desc, ctx.engine(), const_cast<void*>(source));
    memory to(packed, ctx.engine(), storage.get());
    dnnl::reorder(from, to).execute(ctx.stream(), from, to);
    ctx.stream().wait();
    return PackedMatrix(in, out, compute, packed, storage.get(), storage);
}

void matmul(Context& ctx, const MatmulArgs& args, const PackedMatrix& w) {
    if (args.rows <= 0) return;
    if (const RowMatrix* rows = w.rows()) {
        const bool gemv = args.rows <= kGemvMaxRows;
        if (w.compute() == ComputeType::bf16 && ctx.bf16_arithmetic()) {
            // x rounded once, for the GEMV or for oneDNN (all padded rows: the primitive reads them).
            const std::int64_t count = gemv ? args.rows : padded_rows(args.rows);
            std::uint16_t* x_bf16 = ctx.bf16_scratch(std::size_t(count * w.in()));
            round_to_bf16(x_bf16, args.x, count, w.in(), w.in());
            if (gemv) {
                row_gemv(ctx.pool(), {args.y, w.out(), nullptr, w.in(), args.rows, args.accumulate, x_bf16}, *rows);
            } else if (ctx.bf16_gemm()) {
                rows_matmul_bf16(ctx, args, x_bf16, *rows);
            } else {  // the same arithmetic on f32 kernels: rounded x widened back, the rows widened in panels
                float* x_rounded = ctx.rounded_scratch(std::size_t(args.rows * w.in()));
                for (std::int64_t i = 0; i < args.rows * w.in(); ++i) x_rounded[i] = bf16_to_f32(x_bf16[i]);
                MatmulArgs rounded = args;
                rounded.x = x_rounded;
                rows_matmul(ctx, rounded, *rows);
            }
        } else if (gemv) {
            row_gemv(ctx.pool(), {args.y, w.out(), args.x, w.in(), args.rows, args.accumulate}, *rows);
        } else {
            rows_matmul(ctx, args, *rows);
        }
        return;
    }
    // Packed (CPUs without AVX2): f32 arithmetic.
    const std::int64_t rows = padded_rows(args.rows);
    const MatmulKey key{rows, w.in(), w.out(), w.compute(), args.accumulate, w.layout_hash(), w.out()};
    run_matmul(ctx, key, w.desc(), args.x, w.data(), args.y);
    ctx.stream().wait();
}

void gemm(const dnnl::matmul& primitive, dnnl::engine& engine, dnnl::stream& stream, const GemmArgs& g) {
    if (g.m <= 0 || g.n <= 0) return;
    const memory a(memory::desc({g.m, g.k}, DataType::f32, memory::dims{g.lda, 1}), engine, const_cast<float*>(g.a));
    const memory b(memory::desc({g.k, g.n}, DataType::f32, g.b_transposed ? memory::dims{1, g.ldb} : memory::dims{g.ldb, 1}),
                   engine, const_cast<float*>(g.b));
    const memory c(memory::desc({g.m, g.n}, DataType::f32, memory::dims{g.ldc, 1}), engine, g.c);
    const dnnl_exec_arg_t exec_args[] = {{DNNL_ARG_SRC, a.get()}, {DNNL_ARG_WEIGHTS, b.get()}, {DNNL_ARG_DST, c.get()}};
    if (dnnl_primitive_execute(primitive.get(), stream.get(), 3, exec_args) != dnnl_success)
        throw std::runtime_error(fmt::format("oneDNN block matmul [{}, {}] x [{}, {}] failed", g.m, g.k, g.k, g.n));
}

}  // namespace heads
