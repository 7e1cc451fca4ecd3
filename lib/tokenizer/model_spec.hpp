#pragma once
// What a sentencepiece model file says about how it tokenizes, read from its
// protobuf (sentencepiece_model.proto): the model type, the trainer's and
// the normalizer's flags, and every piece with its type. The processor's API
// hides these; text_cuts.hpp needs them to know where a text may be cut.

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace heads {

struct ModelSpec {
    // TrainerSpec.ModelType (a value not listed is kept: a type this code does not know)
    enum class Type : std::uint8_t { unigram = 1, bpe = 2, word = 3, character = 4 };
    // SentencePiece.Type (likewise)
    enum class PieceType : std::uint8_t { normal = 1, unknown = 2, control = 3, user_defined = 4, unused = 5, byte = 6 };
    struct Piece {
        std::string text;  // as stored: "▁the", "<0x0A>", "<s>"
        PieceType type = PieceType::normal;
    };

    Type type = Type::unigram;
    // TrainerSpec
    bool split_by_whitespace = true;
    bool treat_whitespace_as_suffix = false;
    bool byte_fallback = false;
    // NormalizerSpec
    std::string normalizer_name;
    bool has_charsmap = false;  // a precompiled character map: text is rewritten before encoding
    bool add_dummy_prefix = true;
    bool remove_extra_whitespaces = true;
    bool escape_whitespaces = true;

    std::vector<Piece> pieces;  // by id
};

// The spec of a serialized ModelProto (fields the proto leaves out take its
// defaults). Throws heads::Error "malformed model: ..." when the bytes are not
// protobuf wire format or a field has the wrong wire type.
ModelSpec parse_model_spec(std::string_view serialized);

}  // namespace heads
