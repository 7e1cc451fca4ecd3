#include <doctest/doctest.h>

#include <algorithm>
#include <random>

#include <sentencepiece_processor.h>
#include <sentencepiece_trainer.h>

#include "temp_dir.hpp"
#include "tensor/error.hpp"
#include "tokenizer/model_spec.hpp"
#include "tokenizer/stream_decoder.hpp"
#include "tokenizer/text_cuts.hpp"
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

namespace {

// Texts that put every kind of byte at the cuts: runs of spaces, newlines,
// text without spaces, multibyte UTF-8 and invalid bytes next to spaces.
std::vector<std::string> hostile_texts(const std::string& book) {
    std::vector<std::string> texts;
    std::mt19937 random(77);
    const std::vector<std::string> atoms{
        " ",      "  ",          "     ",        "\n",     "\n\n",       " \n ",     "a",     "the",
        "é",      " é",          "\xe2\x96\x81", "€ ",     "語 ",        "😀 ",      "\xff ", "\xe2\x82 ",
        "\xc3 ",  " \xe2\x82\xac", "\t ",        "\r\n",   "1234 ",      "word ",    "x\x01 ", "\xef\xbf\xbd "};
    std::uniform_int_distribution<std::size_t> pick(0, atoms.size() - 1);
    for (int t = 0; t < 6; ++t) {
        std::string text;
        while (text.size() < 6000) text += atoms[pick(random)];
        texts.push_back(text);
    }
    std::string lone(6001, ' ');
    lone[3000] = 'a';
    texts.push_back(lone);
    texts.push_back(std::string(5000, 'a'));
    std::string padded = " ";
    padded += book.substr(0, 8000);
    padded += "  ";
    texts.push_back(padded);
    std::string spaced;  // every word followed by one more space each time
    for (int i = 0; i < 60; ++i) {
        spaced += 'w';
        spaced.append(std::size_t(i % 7) + 1, ' ');
    }
    texts.push_back(spaced);
    texts.push_back(book);
    return texts;
}

// Checks that encoding `text` in parts of about `part_bytes` gives the ids of
// the whole; returns how many parts there were.
std::size_t check_parts(const Tokenizer& tokenizer, const TextCuts& cuts, const std::string& text,
                        std::size_t part_bytes) {
    std::vector<int> whole, joined, some;
    tokenizer.encode(text, whole);
    const auto parts = cuts.parts(text, part_bytes);
    for (const auto part : parts) {
        tokenizer.encode(part, some);
        joined.insert(joined.end(), some.begin(), some.end());
    }
    CAPTURE(part_bytes);
    CHECK(joined == whole);
    return parts.size();
}

std::string model_bytes(const std::filesystem::path& path) { return heads::test::read_file(path); }

}  // namespace

TEST_CASE("model spec: the fields that say how a model tokenizes") {
    const auto kjv = parse_model_spec(model_bytes(std::string(HEADS_SOURCE_DIR) + "/models/kjv/tokenizer.model"));
    CHECK(kjv.type == ModelSpec::Type::bpe);
    CHECK(kjv.has_charsmap);  // nmt_nfkc
    CHECK(kjv.normalizer_name == "nmt_nfkc");
    CHECK(kjv.add_dummy_prefix);
    CHECK(kjv.remove_extra_whitespaces);
    CHECK(kjv.byte_fallback);
    REQUIRE(kjv.pieces.size() == 2048);
    CHECK(kjv.pieces[0].type == ModelSpec::PieceType::unknown);
    CHECK(kjv.pieces[1].text == "<s>");
    CHECK(kjv.pieces[1].type == ModelSpec::PieceType::control);
    CHECK(kjv.pieces[3].type == ModelSpec::PieceType::byte);

    TempDir dir;
    const auto path = train(dir, {"", "--model_type=unigram --normalization_rule_name=identity --add_dummy_prefix=false "
                                      "--split_by_whitespace=false --treat_whitespace_as_suffix=true "
                                      "--user_defined_symbols=foo --vocab_size=600 --character_coverage=0.98"},
                            0);
    const auto spec = parse_model_spec(model_bytes(path));
    CHECK(spec.type == ModelSpec::Type::unigram);
    CHECK_FALSE(spec.has_charsmap);
    CHECK_FALSE(spec.add_dummy_prefix);
    CHECK_FALSE(spec.split_by_whitespace);
    CHECK(spec.treat_whitespace_as_suffix);
    CHECK_FALSE(spec.byte_fallback);
    CHECK(std::count_if(spec.pieces.begin(), spec.pieces.end(), [](const auto& piece) {
              return piece.type == ModelSpec::PieceType::user_defined && piece.text == "foo";
          }) == 1);

    // Bytes that are not a ModelProto.
    CHECK_THROWS_WITH_AS(parse_model_spec("\x0a\x05" "ab"), doctest::Contains("malformed model: field of 5 bytes"), Error);
    CHECK_THROWS_WITH_AS(parse_model_spec("\x0a"), "malformed model: truncated varint at byte 1", Error);
    CHECK_THROWS_WITH_AS(parse_model_spec("\x08\x01"), "malformed model: a piece has wire type 0, not 2", Error);
    CHECK_THROWS_AS(parse_model_spec("\x0f"), Error);
    // Field 2^32+1 (length-delimited, 0 bytes) was cut to 32 bits and read as field 1, a piece.
    CHECK_THROWS_WITH_AS(parse_model_spec(std::string_view("\x8a\x80\x80\x80\x80\x01\x00", 7)),
                         "malformed model: field number 4294967297 at byte 0 is beyond 2^29-1", Error);
    CHECK(parse_model_spec("").type == ModelSpec::Type::unigram);  // every field at its default
}

TEST_CASE("text cuts: the parts' ids joined are the whole text's ids, on every rule set") {
    TempDir dir;
    const std::string book = heads::test::read_file(std::string(HEADS_TEST_DATA) + "/kjv-heldout.txt") +
                             heads::test::read_file(kText);
    struct Case {
        Trained model;
        bool cut;  // whether the model's text may be cut at all
    };
    const std::string bpe = "--model_type=bpe --normalization_rule_name=identity --character_coverage=0.98 ";
    const std::vector<Case> cases{
        {{"llama-like: byte fallback, spaces kept, whitespace-only pieces",
          bpe + "--byte_fallback=true --remove_extra_whitespaces=false --allow_whitespace_only_pieces=true "
                "--split_digits=true --vocab_size=900"},
         true},
        {{"no dummy prefix, unknown pieces", bpe + "--add_dummy_prefix=false --remove_extra_whitespaces=false "
                                                   "--vocab_size=700"},
         true},
        {{"extra whitespace removed", bpe + "--byte_fallback=true --vocab_size=700"}, true},
        {{"pieces across spaces", bpe + "--split_by_whitespace=false --remove_extra_whitespaces=false "
                                        "--byte_fallback=true --vocab_size=900"},
         true},
        {{"nmt_nfkc", "--model_type=bpe --vocab_size=700 --character_coverage=0.98"}, false},
        {{"unigram", "--model_type=unigram --normalization_rule_name=identity --vocab_size=700 "
                     "--character_coverage=0.98"},
         false},
        {{"extra whitespace removed, no dummy prefix", bpe + "--add_dummy_prefix=false --vocab_size=700"}, false},
        {{"user-defined symbols", bpe + "--user_defined_symbols=the,a --vocab_size=700"}, false},
    };
    std::vector<std::pair<std::string, std::filesystem::path>> models;
    for (std::size_t m = 0; m < cases.size(); ++m) models.emplace_back(cases[m].model.name, train(dir, cases[m].model, int(m)));
    models.emplace_back("kjv", std::string(HEADS_SOURCE_DIR) + "/models/kjv/tokenizer.model");
    const auto stories = std::filesystem::path(HEADS_SOURCE_DIR) / "../shared/models/stories260K/tokenizer.model";
    if (std::filesystem::exists(stories))
        models.emplace_back("stories260K", stories);
    else
        MESSAGE("skipping stories260K: " << stories.string() << " is absent");

    const auto texts = hostile_texts(book);
    for (std::size_t m = 0; m < models.size(); ++m) {
        CAPTURE(models[m].first);
        const Tokenizer tokenizer(models[m].second);
        const TextCuts cuts(parse_model_spec(model_bytes(models[m].second)));
        const bool cut = m < cases.size() ? cases[m].cut : models[m].first == "stories260K";
        CHECK(cuts.allowed() == cut);
        std::size_t parts = 0;
        for (std::size_t t = 0; t < texts.size(); ++t) {
            CAPTURE(t);
            for (const std::size_t part_bytes : {1, 2, 5, 33, 400}) parts += check_parts(tokenizer, cuts, texts[t], part_bytes);
        }
        // The texts are cut many times where they may be cut at all.
        if (cut)
            CHECK(parts > 20 * texts.size());
        else
            CHECK(parts == 5 * texts.size());

        // The tokenizer's own path, in parts of 64 KiB on several threads.
        std::string big;
        while (big.size() < (std::size_t(1) << 20)) big += book + texts[big.size() % (texts.size() - 1)];
        std::vector<int> whole, long_ids;
        tokenizer.encode(big, whole);
        tokenizer.encode_long(big, long_ids, 2);
        CHECK(long_ids == whole);
        std::vector<std::string> whole_pieces, long_pieces;
        tokenizer.encode_pieces(big, whole_pieces);
        tokenizer.encode_long_pieces(big, long_pieces);
        CHECK(long_pieces == whole_pieces);
    }
}
