#include <doctest/doctest.h>

#include <random>

#include <sentencepiece_processor.h>
#include <sentencepiece_trainer.h>

#include "temp_dir.hpp"
#include "tensor/error.hpp"
#include "tokenizer/stream_decoder.hpp"
#include "tokenizer/tokenizer.hpp"

using namespace heads;
using heads::test::TempDir;

namespace {

const std::string kText = std::string(HEADS_TEST_DATA) + "/multilingual.txt";

// Tokenizers trained here on the test text, one per decoding rule set.
struct Trained {
    std::string name;
    std::string options;
};

const std::vector<Trained> kModels{
    {"unigram with byte fallback", "--model_type=unigram --byte_fallback=true --vocab_size=700 --character_coverage=0.98"},
    {"bpe without byte fallback (unknown pieces)", "--model_type=bpe --vocab_size=600 --character_coverage=0.98"},
    {"no dummy prefix", "--model_type=unigram --byte_fallback=true --add_dummy_prefix=false --vocab_size=700 "
                        "--character_coverage=0.98"},
    {"spaces kept", "--model_type=bpe --byte_fallback=true --remove_extra_whitespaces=false --vocab_size=800"},
    {"both off", "--model_type=unigram --add_dummy_prefix=false --remove_extra_whitespaces=false "
                 "--vocab_size=700 --character_coverage=0.98"},
};

std::filesystem::path train(const TempDir& dir, const Trained& model, int index) {
    const auto prefix = dir / fmt::format("m{}", index);
    const auto status = sentencepiece::SentencePieceTrainer::Train(
        fmt::format("--input={} --model_prefix={} {} --hard_vocab_limit=false --minloglevel=2 --num_threads=1", kText,
                    prefix.string(), model.options));
    REQUIRE_MESSAGE(status.ok(), std::string(status.message()));
    return prefix.string() + ".model";
}

bool valid_utf8(std::string_view text) {
    for (std::size_t i = 0; i < text.size();) {
        const auto c = static_cast<unsigned char>(text[i]);
        const std::size_t n = c < 0x80 ? 1 : (c & 0xe0) == 0xc0 ? 2 : (c & 0xf0) == 0xe0 ? 3 : (c & 0xf8) == 0xf0 ? 4 : 0;
        if (n == 0 || i + n > text.size()) return false;
        for (std::size_t k = 1; k < n; ++k)
            if ((static_cast<unsigned char>(text[i + k]) & 0xc0) != 0x80) return false;
        i += n;
    }
    return true;
}

std::vector<std::string> lines_of(const std::string& path) {
    std::vector<std::string> lines;
    std::string text = heads::test::read_file(path), line;
    for (char c : text) {
        if (c == '\n') {
            lines.push_back(line);
            line.clear();
        } else {
            line += c;
        }
    }
    return lines;
}

}  // namespace

TEST_CASE("decode equals sentencepiece's, whole and id by id, on every rule set") {
    TempDir dir;
    std::mt19937 random(1234);
    for (std::size_t m = 0; m < kModels.size(); ++m) {
        CAPTURE(kModels[m].name);
        const auto path = train(dir, kModels[m], int(m));
        const Tokenizer tokenizer(path);
        sentencepiece::SentencePieceProcessor reference;
        REQUIRE(reference.Load(path.string()).ok());
        CHECK(tokenizer.vocab_size() == reference.GetPieceSize());

        std::vector<std::vector<int>> sequences;
        for (const auto& line : lines_of(kText)) {
            std::vector<int> ids;
            tokenizer.encode(line, ids);
            CHECK(ids == reference.EncodeAsIds(line));
            sequences.push_back(ids);
        }
        // Hostile sequences: random ids of every kind (control, unknown, byte
        // pieces that do not form UTF-8, spaces at the start).
        std::uniform_int_distribution<int> any_id(0, tokenizer.vocab_size() - 1);
        std::uniform_int_distribution<int> length(0, 12);
        for (int i = 0; i < 3000; ++i) {
            std::vector<int> ids(std::size_t(length(random)));
            for (auto& id : ids) id = any_id(random);
            sequences.push_back(ids);
        }
        const int space = reference.PieceToId("\xe2\x96\x81");
        if (!reference.IsUnknown(space)) {
            sequences.push_back({space, space, space});
            sequences.push_back({1, space, 2, space, tokenizer.vocab_size() - 1});
        }

        for (const auto& ids : sequences) {
            CAPTURE(ids);
            const std::string expected = reference.DecodeIds(ids);
            CHECK(tokenizer.decode(ids) == expected);
            StreamDecoder stream(tokenizer);
            std::string streamed;
            bool every_chunk_valid = true;
            for (const int id : ids) {
                std::string chunk;
                stream.push(id, chunk);
                every_chunk_valid = every_chunk_valid && valid_utf8(chunk);
                streamed += chunk;
            }
            std::string tail;
            stream.finish(tail);
            CHECK(every_chunk_valid);
            CHECK(streamed + tail == expected);
        }
    }
}

TEST_CASE("a stream decoder hands out a character once its last byte arrives") {
    TempDir dir;
    const Tokenizer tokenizer(train(dir, kModels[0], 0));
    sentencepiece::SentencePieceProcessor reference;
    REQUIRE(reference.Load((dir / "m0.model").string()).ok());
    const auto byte_id = [&](int byte) { return reference.PieceToId(fmt::format("<0x{:02X}>", byte)); };
    StreamDecoder stream(tokenizer);
    std::string out;
    stream.push(byte_id(0xe2), out);  // "€" is e2 82 ac
    stream.push(byte_id(0x82), out);
    CHECK(out.empty());
    stream.push(byte_id(0xac), out);
    CHECK(out == "€");
    stream.push(byte_id(0xff), out);  // never UTF-8: replaced at once
    CHECK(out == "€\xef\xbf\xbd");
    stream.push(byte_id(0xc3), out);  // the sequence ends before the character does
    stream.finish(out);
    CHECK(out == "€\xef\xbf\xbd\xef\xbf\xbd");
    // After finish, the next sequence starts afresh: its leading space goes.
    std::string next;
    const int piece = reference.PieceToId("\xe2\x96\x81the");
    if (!reference.IsUnknown(piece)) {
        stream.push(piece, next);
        CHECK(next == "the");
    }
}

TEST_CASE("ids outside the vocabulary are errors") {
    TempDir dir;
    const Tokenizer tokenizer(train(dir, kModels[0], 0));
    StreamDecoder stream(tokenizer);
    std::string out;
    CHECK_THROWS_WITH_AS(stream.push(tokenizer.vocab_size(), out),
                         fmt::format("token id {0} is out of range (vocabulary of {0})", tokenizer.vocab_size()).c_str(),
                         Error);
    CHECK_THROWS_AS(stream.push(-1, out), Error);
    CHECK_THROWS_AS(tokenizer.piece(-5), Error);
    CHECK(tokenizer.piece(tokenizer.bos_id()) == "<s>");
}

TEST_CASE("loading: a directory, a file, and every way it fails") {
    TempDir dir;
    const auto model = train(dir, kModels[0], 0);
    std::filesystem::create_directory(dir / "model");
    std::filesystem::copy_file(model, dir / "model" / "tokenizer.model");
    CHECK(Tokenizer(dir / "model").vocab_size() == Tokenizer(model).vocab_size());
    std::filesystem::create_directory(dir / "empty");
    CHECK_THROWS_WITH_AS(Tokenizer(dir / "empty"),
                         ((dir / "empty").string() + ": no tokenizer.model in the model directory").c_str(), Error);
    CHECK_THROWS_WITH_AS(Tokenizer(dir / "absent"), ((dir / "absent").string() + ": no such model or tokenizer").c_str(),
                         Error);
    heads::test::write_file(dir / "corrupt.model", "this is not a protobuf \x01\x02\x03");
    CHECK_THROWS_WITH_AS(Tokenizer(dir / "corrupt.model"),
                         doctest::Contains(((dir / "corrupt.model").string() + ": not a sentencepiece model").c_str()),
                         Error);
    // A real model cut in half.
    const std::string bytes = heads::test::read_file(model);
    heads::test::write_file(dir / "half.model", bytes.substr(0, bytes.size() / 2));
    CHECK_THROWS_AS(Tokenizer(dir / "half.model"), Error);
}
