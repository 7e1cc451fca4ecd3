#include "ops/context.hpp"

#include <omp.h>

#include <stdexcept>

#include <fmt/format.h>

#include "ops/row_gemv.hpp"

namespace heads {

std::size_t MatmulKeyHash::operator()(const MatmulKey& key) const {
    std::size_t h = std::hash<std::int64_t>()(key.rows);
    auto mix = [&h](std::uint64_t value) { h ^= std::hash<std::uint64_t>()(value) + 0x9e3779b97f4a7c15ull + (h << 6) + (h >> 2); };
    mix(std::uint64_t(key.in));
    mix(std::uint64_t(key.out));
    mix(std::uint64_t(key.compute));
    mix(std::uint64_t(key.accumulate));
    mix(key.layout);
    mix(std::uint64_t(key.ldy));
    return h;
}

Context::Context(int threads)
    : engine_(dnnl::engine::kind::cpu, 0), stream_(engine_), threads_(threads > 0 ? threads : omp_get_num_procs()),
      pool_(threads_) {
    omp_set_num_threads(threads_);
}

bool Context::has_bf16_matmul() {
    if (bf16_matmul_ < 0) {
        using dnnl::memory;
        try {
            const memory::desc src({1, 64}, memory::data_type::bf16, memory::format_tag::ab);
            const memory::desc weights({64, 64}, memory::data_type::bf16, memory::format_tag::any);
            const memory::desc dst({1, 64}, memory::data_type::f32, memory::format_tag::ab);
            dnnl::matmul::primitive_desc(dnnl::matmul::desc(src, weights, dst), engine_);
            bf16_matmul_ = 1;
        } catch (const dnnl::error&) {
            bf16_matmul_ = 0;
        }
    }
    return bf16_matmul_ == 1;
}

bool Context::bf16_arithmetic() { return has_bf16_matmul() && row_gemv_bf16_supported(); }

bool Context::bf16_gemm() {
    if (bf16_gemm_ < 0)
        bf16_gemm_ = dnnl::get_effective_cpu_isa() == dnnl::cpu_isa::avx512_core_amx || __builtin_cpu_is("amd") ? 1 : 0;
    return bf16_gemm_ == 1;
}

std::string Context::describe() {
    return fmt::format("oneDNN {} on {}, bf16 arithmetic: {}", onednn_version(), isa(),
                       !bf16_arithmetic() ? "no" : bf16_gemm() ? "yes" : "yes (prefill on f32 kernels)");
}

std::string Context::isa() const {
    switch (dnnl::get_effective_cpu_isa()) {
    case dnnl::cpu_isa::sse41: return "sse41";
    case dnnl::cpu_isa::avx: return "avx";
    case dnnl::cpu_isa::avx2: return "avx2";
    case dnnl::cpu_isa::avx2_vnni: return "avx2_vnni";
    case dnnl::cpu_isa::avx512_core: return "avx512_core";
    case dnnl::cpu_isa::avx512_core_vnni: return "avx512_core_vnni";
    case dnnl::cpu_isa::avx512_core_bf16: return "avx512_core_bf16";
    case dnnl::cpu_isa::avx512_core_amx: return "avx512_core_amx";
    default: return fmt::format("isa{:x}", unsigned(dnnl::get_effective_cpu_isa()));
    }
}

std::string Context::onednn_version() {
    const dnnl_version_t* version = dnnl::version();
    return fmt::format("{}.{}.{}", version->major, version->minor, version->patch);
}

const dnnl::matmul& Context::gemm_primitive(bool b_transposed, bool accumulate) {
    auto& slot = gemm_[b_transposed][accumulate];
    if (!slot) {
        using dnnl::memory;
        constexpr auto any = DNNL_RUNTIME_DIM_VAL;
        const memory::desc a({any, any}, memory::data_type::f32, memory::dims{any, 1});
        const memory::desc b({any, any}, memory::data_type::f32, b_transposed ? memory::dims{1, any} : memory::dims{any, 1});
        const memory::desc c({any, any}, memory::data_type::f32, memory::dims{any, 1});
        dnnl::primitive_attr attr;
        if (accumulate) {
            dnnl::post_ops ops;
            ops.append_sum(1.0f);
            attr.set_post_ops(ops);
        }
        const dnnl::matmul::primitive_desc pd(dnnl::matmul::desc(a, b, c), attr, engine_);
        if (pd.scratchpad_desc().get_size() != 0)
            throw std::runtime_error("oneDNN's runtime-shape matmul wants a scratchpad; heads does not provide one");
        slot = std::make_unique<dnnl::matmul>(pd);
    }
    return *slot;
}

MatmulEntry* Context::find_matmul(const MatmulKey& key) {
    auto found = matmul_cache_.find(key);
    if (found == matmul_cache_.end()) return nullptr;
    ages_.splice(ages_.begin(), ages_, found->second.age);
    return &found->second.entry;
}

MatmulEntry& Context::add_matmul(const MatmulKey& key, MatmulEntry entry) {
    if (matmul_cache_.size() >= kMatmulCacheSize) {
        matmul_cache_.erase(ages_.back());
        ages_.pop_back();
    }
    ages_.push_front(key);
    auto [inserted, unused] = matmul_cache_.insert_or_assign(key, Cached{std::move(entry), ages_.begin()});
    return inserted->second.entry;
}

}  // namespace heads
