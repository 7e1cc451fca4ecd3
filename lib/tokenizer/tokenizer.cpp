#include "tokenizer/tokenizer.hpp"

#include <sentencepiece_processor.h>

#include "tensor/error.hpp"
#include "tokenizer/stream_decoder.hpp"

namespace heads {
namespace {

constexpr std::string_view kSpaceSymbol = "\xe2\x96\x81";  // U+2581, sentencepiece's space

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

}  // namespace

Tokenizer::Tokenizer(const std::filesystem::path& path)
    : processor_(std::make_unique<sentencepiece::SentencePieceProcessor>()) {
    std::filesystem::path file = path;
    if (std::filesystem::is_directory(path)) {
        file = path / "tokenizer.model";
        if (!std::filesystem::exists(file)) throw Error("{}: no tokenizer.model in the model directory", path.string());
    } else if (!std::filesystem::exists(path)) {
        throw Error("{}: no such model or tokenizer", path.string());
    }
    const auto status = processor_->Load(file.string());
    if (!status.ok()) throw Error("{}: not a sentencepiece model ({})", file.string(), status.message());

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

void Tokenizer::encode_pieces(std::string_view text, std::vector<std::string>& pieces) const {
    const auto status = processor_->Encode(text, &pieces);
    if (!status.ok()) throw Error("cannot tokenize: {}", status.message());
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
