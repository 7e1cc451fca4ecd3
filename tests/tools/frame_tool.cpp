// frame_tool: a test helper that writes and reads safetensors frames through
// lib/safetensors, so scripts can check them against numpy and feed hostile
// files to the reader. Not installed.
//   frame_tool write PATH      a sample frame, atomically
//   frame_tool stream N        N sample frames to stdout
//   frame_tool dump [FILE|-]   every frame of a stream: metadata, tensors, sums
//   frame_tool dump-file FILE  the one frame of a file, through mmap

#include <cmath>
#include <cstring>

#include <fmt/format.h>

#include "cli/run.hpp"
#include "io/output.hpp"
#include "safetensors/keys.hpp"
#include "safetensors/read.hpp"
#include "safetensors/write.hpp"
#include "tensor/error.hpp"

using namespace heads;

namespace {

// Tensor k of frame f holds the values f * 100 + k + i / 4 (i = element index), in its dtype.
Frame sample_frame(int index) {
    Frame frame;
    frame.metadata[std::string(keys::kind)] = std::string(kinds::kv);
    frame.metadata[std::string(keys::tokens)] = fmt::format("1 {} 2", index);
    const std::vector<std::pair<std::string, DType>> tensors{
        {"f32", DType::F32}, {"bf16", DType::BF16}, {"f16", DType::F16}, {"i32", DType::I32},
        {"i8", DType::I8},   {"u8", DType::U8},     {"f64", DType::F64}, {"i64", DType::I64}};
    for (std::size_t k = 0; k < tensors.size(); ++k) {
        const auto& [name, dtype] = tensors[k];
        Tensor tensor = Tensor::zeros(dtype, {2, 3, int(k) + 1});
        auto bytes = tensor.mutable_bytes();
        for (std::int64_t i = 0; i < tensor.numel(); ++i) {
            const double value = index * 100 + double(k) + double(i) / 4;
            std::byte* at = bytes.data() + std::size_t(i) * dtype_size(dtype);
            const auto put = [&](auto v) { std::memcpy(at, &v, sizeof v); };
            switch (dtype) {
            case DType::F32: put(float(value)); break;
            case DType::BF16: put(f32_to_bf16(float(value))); break;
            case DType::F16: put(f32_to_f16(float(value))); break;
            case DType::I32: put(std::int32_t(std::floor(value))); break;
            case DType::I8: put(std::int8_t(std::int64_t(std::floor(value)) % 128)); break;
            case DType::U8: put(std::uint8_t(std::int64_t(std::floor(value)) % 256)); break;
            case DType::F64: put(value); break;
            case DType::I64: put(std::int64_t(std::floor(value))); break;
            default: break;
            }
        }
        frame.add(name, tensor);
    }
    return frame;
}

double sum_of(const Tensor& tensor) {
    double sum = 0;
    const std::byte* data = tensor.bytes().data();
    for (std::int64_t i = 0; i < tensor.numel(); ++i) {
        const std::byte* at = data + std::size_t(i) * dtype_size(tensor.dtype());
        const auto get = [&](auto v) {
            std::memcpy(&v, at, sizeof v);
            return v;
        };
        switch (tensor.dtype()) {
        case DType::F32: sum += get(float()); break;
        case DType::BF16: sum += bf16_to_f32(get(std::uint16_t())); break;
        case DType::F16: sum += f16_to_f32(get(std::uint16_t())); break;
        case DType::I32: sum += get(std::int32_t()); break;
        case DType::I8: sum += get(std::int8_t()); break;
        case DType::U8: sum += get(std::uint8_t()); break;
        case DType::F64: sum += get(double()); break;
        case DType::I64: sum += double(get(std::int64_t())); break;
        case DType::I16: sum += get(std::int16_t()); break;
        case DType::Bool: sum += get(std::uint8_t()); break;
        }
    }
    return sum;
}

void dump(const Frame& frame, std::size_t index) {
    std::string out = fmt::format("frame {}\n", index);
    for (const auto& [key, value] : frame.metadata) out += fmt::format("meta {} {}\n", key, value);
    for (const auto& [name, tensor] : frame)
        out += fmt::format("tensor {} {} {} {:.6f}\n", name, dtype_name(tensor.dtype()), shape_string(tensor.shape()),
                           sum_of(tensor));
    write_all(stdout, out);
}

}  // namespace

int main(int argc, char** argv) {
    CLI::App app{"safetensors test helper", "frame_tool"};
    std::string command, argument = "-";
    app.add_option("command", command)->required();
    app.add_option("argument", argument);
    return cli::run(app, argc, argv, [&] {
        if (command == "write") {
            write_frame_file(argument, sample_frame(0));
        } else if (command == "stream") {
            for (int i = 0; i < std::stoi(argument); ++i) write_frame(stdout, sample_frame(i));
        } else if (command == "dump") {
            FrameReader reader(argument);
            while (auto frame = reader.next()) dump(*frame, reader.count());
        } else if (command == "dump-file") {
            dump(read_frame_file(argument), 1);
        } else {
            throw UsageError("unknown command '{}'", command);
        }
    });
}
