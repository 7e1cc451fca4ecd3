#include "tokenizer/model_spec.hpp"

#include "tensor/error.hpp"

namespace heads {
namespace {

// Protobuf wire format, as far as a ModelProto needs: varints and
// length-delimited fields are read, fixed-width ones skipped.
class WireReader {
public:
    static constexpr std::uint64_t kMaxFieldNumber = (std::uint64_t(1) << 29) - 1;

    explicit WireReader(std::string_view bytes) : bytes_(bytes) {}

    bool done() const { return at_ == bytes_.size(); }

    // The next field's number and wire type.
    void next_field(std::uint32_t& number, std::uint32_t& wire_type) {
        const std::size_t start = at_;
        const std::uint64_t key = varint();
        // Field numbers are 1 to 2^29-1: a larger key must not be cut to 32 bits and read as another field.
        if ((key >> 3) > kMaxFieldNumber)
            throw Error("malformed model: field number {} at byte {} is beyond 2^29-1", key >> 3, start);
        number = std::uint32_t(key >> 3);
        wire_type = std::uint32_t(key & 7);
        if (number == 0) throw Error("malformed model: field number 0 at byte {}", at_);
    }

    std::uint64_t varint() {
        std::uint64_t value = 0;
        for (int shift = 0; shift < 64; shift += 7) {
            if (at_ == bytes_.size()) throw Error("malformed model: truncated varint at byte {}", at_);
            const auto byte = static_cast<unsigned char>(bytes_[at_++]);
            value |= std::uint64_t(byte & 0x7f) << shift;
            if (byte < 0x80) return value;
        }
        throw Error("malformed model: varint longer than 10 bytes at byte {}", at_);
    }

    std::string_view bytes() {
        const std::uint64_t size = varint();
        if (size > bytes_.size() - at_) throw Error("malformed model: field of {} bytes past the end at byte {}", size, at_);
        const auto field = bytes_.substr(at_, std::size_t(size));
        at_ += std::size_t(size);
        return field;
    }

    void skip(std::uint32_t wire_type) {
        switch (wire_type) {
        case 0: varint(); return;
        case 1: advance(8); return;
        case 2: bytes(); return;
        case 5: advance(4); return;
        default: throw Error("malformed model: unsupported wire type {} at byte {}", wire_type, at_);
        }
    }

private:
    void advance(std::size_t size) {
        if (size > bytes_.size() - at_) throw Error("malformed model: truncated field at byte {}", at_);
        at_ += size;
    }

    std::string_view bytes_;
    std::size_t at_ = 0;
};

void expect(std::uint32_t wire_type, std::uint32_t expected, std::string_view field) {
    if (wire_type != expected) throw Error("malformed model: {} has wire type {}, not {}", field, wire_type, expected);
}

// Visits every field of `message`: a varint field as its value, a
// length-delimited one as its bytes; others are skipped.
template <class OnVarint, class OnBytes>
void for_each_field(std::string_view message, OnVarint on_varint, OnBytes on_bytes) {
    WireReader reader(message);
    while (!reader.done()) {
        std::uint32_t number = 0, wire_type = 0;
        reader.next_field(number, wire_type);
        if (wire_type == 0)
            on_varint(number, reader.varint());
        else if (wire_type == 2)
            on_bytes(number, reader.bytes());
        else
            reader.skip(wire_type);
    }
}

// An enum as stored: a value this code does not know stays unknown (0 when
// out of range) for the caller to treat as "neither of those it knows".
template <class Enum>
Enum enum_value(std::uint64_t value) {
    return Enum(value <= 0xff ? value : 0);
}

ModelSpec::Piece parse_piece(std::string_view message) {
    ModelSpec::Piece piece;
    for_each_field(
        message,
        [&](std::uint32_t number, std::uint64_t value) {
            if (number == 3)
                piece.type = enum_value<ModelSpec::PieceType>(value);
        },
        [&](std::uint32_t number, std::string_view bytes) {
            if (number == 1) piece.text = bytes;
        });
    return piece;
}

void parse_trainer_spec(std::string_view message, ModelSpec& spec) {
    for_each_field(
        message,
        [&](std::uint32_t number, std::uint64_t value) {
            switch (number) {
            case 3: spec.type = enum_value<ModelSpec::Type>(value); break;
            case 22: spec.split_by_whitespace = value != 0; break;
            case 24: spec.treat_whitespace_as_suffix = value != 0; break;
            case 35: spec.byte_fallback = value != 0; break;
            default: break;
            }
        },
        [](std::uint32_t, std::string_view) {});
}

void parse_normalizer_spec(std::string_view message, ModelSpec& spec) {
    for_each_field(
        message,
        [&](std::uint32_t number, std::uint64_t value) {
            switch (number) {
            case 3: spec.add_dummy_prefix = value != 0; break;
            case 4: spec.remove_extra_whitespaces = value != 0; break;
            case 5: spec.escape_whitespaces = value != 0; break;
            default: break;
            }
        },
        [&](std::uint32_t number, std::string_view bytes) {
            if (number == 1) spec.normalizer_name = bytes;
            if (number == 2) spec.has_charsmap = !bytes.empty();
        });
}

}  // namespace

ModelSpec parse_model_spec(std::string_view serialized) {
    ModelSpec spec;
    WireReader reader(serialized);
    while (!reader.done()) {
        std::uint32_t number = 0, wire_type = 0;
        reader.next_field(number, wire_type);
        switch (number) {
        case 1:
            expect(wire_type, 2, "a piece");
            spec.pieces.push_back(parse_piece(reader.bytes()));
            break;
        case 2:
            expect(wire_type, 2, "the trainer spec");
            parse_trainer_spec(reader.bytes(), spec);
            break;
        case 3:
            expect(wire_type, 2, "the normalizer spec");
            parse_normalizer_spec(reader.bytes(), spec);
            break;
        default: reader.skip(wire_type); break;
        }
    }
    return spec;
}

}  // namespace heads
