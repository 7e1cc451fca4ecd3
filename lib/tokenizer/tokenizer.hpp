#pragma once
// A sentencepiece tokenizer (the tokenizer.model of a Llama model directory)
// and what decoding needs to know of every piece, computed once at load.

#include <cstdint>
#include <filesystem>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "tokenizer/text_cuts.hpp"

namespace sentencepiece {
class SentencePieceProcessor;
}

namespace heads {

class Tokenizer {
public:
    // `path` is a model directory (its tokenizer.model) or a .model file.
    // Throws heads::Error "PATH: reason" when missing or not a sentencepiece model.
    explicit Tokenizer(const std::filesystem::path& path);
    Tokenizer(Tokenizer&&) noexcept;
    ~Tokenizer();

    int vocab_size() const { return int(pieces_.size()); }
    int bos_id() const { return bos_id_; }  // -1 when the model has none
    int eos_id() const { return eos_id_; }  // -1 when the model has none

    // The ids of `text`, exactly as spm_encode --output_format=id; `ids` is overwritten.
    void encode(std::string_view text, std::vector<int>& ids) const;
    // Every line's ids (ids[i] for lines[i], overwritten) on `threads`
    // threads: the processor is read-only while it encodes.
    void encode_batch(std::span<const std::string_view> lines, std::vector<std::vector<int>>& ids, int threads) const;
    // The ids of a text of any length (a book, newlines kept), the same as
    // encode()'s, in parts cut where the ids cannot change (text_cuts.hpp)
    // so that memory stays a small multiple of the text; parts are encoded
    // on `threads` threads.
    void encode_long(std::string_view text, std::vector<int>& ids, int threads) const;
    // The pieces of `text`, as spm_encode --output_format=piece.
    void encode_pieces(std::string_view text, std::vector<std::string>& pieces) const;
    // The pieces of a text of any length, as encode_long() cuts it.
    void encode_long_pieces(std::string_view text, std::vector<std::string>& pieces) const;
    // A whole sequence as text, exactly as spm_decode (through StreamDecoder).
    // Throws heads::Error for an id outside the vocabulary.
    std::string decode(std::span<const int> ids) const;
    // The piece of an id as stored ("▁the", "<0x0A>", "<s>").
    const std::string& piece(int id) const;

    // What decoding needs of a piece (see StreamDecoder).
    struct PieceInfo {
        enum class Kind : std::uint8_t { text, control, unknown, byte };
        Kind kind = Kind::text;
        bool leading_space = false;  // the piece starts with U+2581
        std::uint8_t byte = 0;       // for byte pieces <0xNN>
        std::string surface;         // U+2581 replaced by ' '
    };
    const PieceInfo& info(int id) const { return pieces_[std::size_t(id)]; }
    // The model's decoding rules, read from how its processor decodes.
    bool strips_leading_space() const { return strips_leading_space_; }
    bool strips_every_leading_space() const { return strips_every_leading_space_; }
    const std::string& unknown_surface() const { return unknown_surface_; }

    // Throws heads::Error "token id ID is out of range (vocabulary of N)".
    void check_id(int id) const;

private:
    std::unique_ptr<sentencepiece::SentencePieceProcessor> processor_;
    TextCuts cuts_;
    std::vector<PieceInfo> pieces_;
    std::vector<std::string> raw_pieces_;
    int bos_id_ = -1;
    int eos_id_ = -1;
    bool strips_leading_space_ = true;
    bool strips_every_leading_space_ = true;
    std::string unknown_surface_;
};

}  // namespace heads
