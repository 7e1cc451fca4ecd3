#include "tokenizer/tokenizer.hpp"

#include <sentencepiece_processor.h>

#include "io/read_file.hpp"
#include "tensor/error.hpp"
#include "tokenizer/model_spec.hpp"
#include "tokenizer/stream_decoder.hpp"

namespace heads {
namespace {

constexpr std::string_view kSpaceSymbol = "\xe2\x96\x81";  // U+2581, sentencepiece's space
// Parts small enough for sentencepiece's working memory (about 90 bytes a
// byte) to stay small, large enough for a cut to be rare.
constexpr std::size_t kPartBytes = std::size_t(64) << 10;

std::string replace_space_symbols(std::string_view piece) {
    std::string out;
    out.reserve(piece.size());
    for (std::size_t at = 0; at < piece.size();) {
        if (piece.substr(at, kSpaceSymbol.size()) == kSpaceSymbol) {
            out += ' ';
            at += kSpaceSymbol.size();
        } else {
            out += piece[at++];
        }
    }
    return out;
}

// The processor of a model file, loaded.
std::unique_ptr<sentencepiece::SentencePieceProcessor> load(const std::filesystem::path& path) {
    std::filesystem::path file = path;
    if (std::filesystem::is_directory(path)) {
        file = path / "tokenizer.model";
        if (!std::filesystem::exists(file)) throw Error("{}: no tokenizer.model in the model directory", path.string());
    } else if (!std::filesystem::exists(path)) {
        throw Error("{}: no such model or tokenizer", path.string());
    }
    // Read here, not by sentencepiece: a directory or FIFO named tokenizer.model
    // is an error naming it, where sentencepiece would say only "underflow
    // error" or wait for a writer.
    const std::string bytes = read_file(file, "the tokenizer", FileKinds::regular_only);
    auto processor = std::make_unique<sentencepiece::SentencePieceProcessor>();
    const auto status = processor->LoadFromSerializedProto(bytes);
    if (!status.ok()) throw Error("{}: not a sentencepiece model ({})", file.string(), status.message());
    return processor;
}

}  // namespace

Tokenizer::Tokenizer(const std::filesystem::path& path)
    : processor_(load(path)), cuts_(parse_model_spec(processor_->serialized_model_proto())) {
    const int size = processor_->GetPieceSize();
    pieces_.resize(std::size_t(size));
    raw_pieces_.resize(std::size_t(size));
    for (int id = 0; id < size; ++id) {
        auto& info = pieces_[std::size_t(id)];
        const std::string& piece = raw_pieces_[std::size_t(id)] = processor_->IdToPiece(id);
        if (processor_->IsControl(id)) {
            info.kind = PieceInfo::Kind::control;
        } else if (processor_->IsUnknown(id)) {
            info.kind = PieceInfo::Kind::unknown;
        } else if (processor_->IsByte(id)) {
            info.kind = PieceInfo::Kind::byte;
            info.byte = std::uint8_t(std::stoi(piece.substr(3, 2), nullptr, 16));  // <0xNN>
        } else {
            info.leading_space = std::string_view(piece).substr(0, kSpaceSymbol.size()) == kSpaceSymbol;
            info.surface = replace_space_symbols(piece);
        }
    }
    bos_id_ = processor_->bos_id();
    eos_id_ = processor_->eos_id();

    // The decoding rules live in the model's normalizer spec, which the
    // processor API does not expose: read them from how it decodes.
    const int unk = processor_->unk_id();
    unknown_surface_ = unk >= 0 && unk < size ? processor_->DecodeIds({unk}) : std::string(" \xe2\x81\x87 ");
    for (int id = 0; id < size; ++id) {
        const auto& info = pieces_[std::size_t(id)];
        if (info.kind == PieceInfo::Kind::text && info.leading_space) {
            strips_leading_space_ = processor_->DecodeIds({id}) != info.surface;
            break;
        }
    }
    const int bare_space = processor_->PieceToId(kSpaceSymbol);
    strips_every_leading_space_ = false;
    if (strips_leading_space_ && bare_space >= 0 && pieces_[std::size_t(bare_space)].kind == PieceInfo::Kind::text &&
        raw_pieces_[std::size_t(bare_space)] == kSpaceSymbol)
        strips_every_leading_space_ = processor_->DecodeIds({bare_space, bare_space}).empty();
}

Tokenizer::Tokenizer(Tokenizer&&) noexcept = default;
Tokenizer::~Tokenizer() = default;

void Tokenizer::encode(std::string_view text, std::vector<int>& ids) const {
    const auto status = processor_->Encode(text, &ids);
    if (!status.ok()) throw Error("cannot tokenize: {}", status.message());
}

void Tokenizer::encode_batch(std::span<const std::string_view> lines, std::vector<std::vector<int>>& ids,
                             int threads) const {
    if (ids.size() < lines.size()) ids.resize(lines.size());
    const auto count = std::int64_t(lines.size());
    if (threads <= 1 || count < 2) {
        for (std::int64_t i = 0; i < count; ++i) encode(lines[std::size_t(i)], ids[std::size_t(i)]);
        return;
    }
    // An exception must not leave an OpenMP region: keep the first message.
    std::string failure;
#pragma omp parallel for num_threads(threads) schedule(dynamic, 16)
    for (std::int64_t i = 0; i < count; ++i) {
        const auto status = processor_->Encode(lines[std::size_t(i)], &ids[std::size_t(i)]);
        if (!status.ok()) {
#pragma omp critical
            if (failure.empty()) failure = status.message();
        }
    }
    if (!failure.empty()) throw Error("cannot tokenize: {}", failure);
}

void Tokenizer::encode_long(std::string_view text, std::vector<int>& ids, int threads) const {
    const auto parts = cuts_.parts(text, kPartBytes);
    if (parts.size() == 1) return encode(text, ids);
    std::vector<std::vector<int>> part_ids;
    encode_batch(parts, part_ids, threads);
    std::size_t count = 0;
    for (const auto& some : part_ids) count += some.size();
    ids.clear();
    ids.reserve(count);
    for (auto& some : part_ids) {
        ids.insert(ids.end(), some.begin(), some.end());
        std::vector<int>().swap(some);
    }
}

void Tokenizer::encode_pieces(std::string_view text, std::vector<std::string>& pieces) const {
    const auto status = processor_->Encode(text, &pieces);
    if (!status.ok()) throw Error("cannot tokenize: {}", status.message());
}

void Tokenizer::encode_long_pieces(std::string_view text, std::vector<std::string>& pieces) const {
    pieces.clear();
    std::vector<std::string> part_pieces;
    for (const auto part : cuts_.parts(text, kPartBytes)) {
        encode_pieces(part, part_pieces);
        for (auto& piece : part_pieces) pieces.push_back(std::move(piece));
    }
}

std::string Tokenizer::decode(std::span<const int> ids) const {
    StreamDecoder decoder(*this);
    std::string text;
    for (const int id : ids) decoder.push(id, text);
    decoder.finish(text);
    return text;
}

const std::string& Tokenizer::piece(int id) const {
    check_id(id);
    return raw_pieces_[std::size_t(id)];
}

void Tokenizer::check_id(int id) const {
    if (id < 0 || id >= vocab_size())
        throw Error("token id {} is out of range (vocabulary of {})", id, vocab_size());
}

}  // namespace heads
