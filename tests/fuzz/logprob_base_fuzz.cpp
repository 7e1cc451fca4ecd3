// libFuzzer target: arbitrary bytes as the --kl-base file of infer --ppl (a
// safetensors frame of log-probabilities), checked against a run whose
// vocabulary comes from the first byte, window 8, and targets those the
// file holds (when it holds I32 ones: the case a real run meets). A hostile
// file may only ever raise heads::Error; one accepted gives
// [predictions, vocab] rows inside the file.

#include <cstddef>
#include <cstdint>
#include <span>
#include <vector>

#include "eval/logprob_base.hpp"
#include "fuzz_check.hpp"
#include "safetensors/read.hpp"
#include "tensor/error.hpp"

using heads::fuzz::check;

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    if (size == 0) return 0;
    const std::int64_t vocab = 1 + data[0] % 8;
    const std::span<const std::byte> bytes(reinterpret_cast<const std::byte*>(data) + 1, size - 1);
    try {
        const heads::Frame frame = heads::read_frame_bytes(bytes, nullptr, "base");
        std::vector<std::int32_t> targets;
        if (const heads::Tensor* saved = frame.find("targets"); saved && saved->dtype() == heads::DType::I32)
            for (const std::int32_t t : saved->data<std::int32_t>()) targets.push_back(t);
        const float* rows = heads::check_logprob_base(frame, "base", vocab, 8, targets);
        const heads::Tensor& log_probs = frame.at("log_probs");
        check(rows == log_probs.data<float>().data() && log_probs.dim(0) == std::int64_t(targets.size()) &&
                  log_probs.dim(1) == vocab,
              "an accepted base of another shape");
        float sum = 0;  // every row readable (ASan: inside the file)
        for (const float x : log_probs.data<float>()) sum += x;
        (void)sum;
    } catch (const heads::Error&) {
    }
    return 0;
}
