// lib/io: the strict count parser every parser of counts shares, whole-file reads, and the id-line format.
#include <cerrno>
#include <cstdint>
#include <cstdio>
#include <string>
#include <system_error>
#include <string_view>
#include <vector>

#include <doctest/doctest.h>
#include <sys/stat.h>

#include "io/id_line.hpp"
#include "io/number.hpp"
#include "io/output.hpp"
#include "io/read_file.hpp"
#include "temp_dir.hpp"
#include "tensor/error.hpp"
#include "tensor/quote.hpp"

using namespace heads;
using heads::test::TempDir;
using heads::test::write_file;

namespace {

std::vector<std::int32_t> ids_of(std::string_view line) {
    std::vector<std::int32_t> ids;
    parse_ids(line, ids);
    return ids;
}

}  // namespace

TEST_CASE("parse_count: decimal digits only, fitting the type") {
    CHECK(parse_count("0") == 0);
    CHECK(parse_count("007") == 7);
    CHECK(parse_count("9223372036854775807") == INT64_MAX);
    CHECK(parse_count<std::int32_t>("2147483647") == INT32_MAX);
    CHECK_FALSE(parse_count<std::int32_t>("2147483648"));
    CHECK_FALSE(parse_count("9223372036854775808"));
    // "-0" is the case from_chars alone lets through.
    for (const char* bad : {"", "-0", "-1", "+1", " 1", "1 ", "1.0", "0x1", "1e3", "x", "1,2"})
        CHECK_FALSE(parse_count(bad));
}

TEST_CASE("read_file: every byte, or an error naming the path and what it is") {
    TempDir dir;
    const std::string bytes("a\0b\r\nlast", 10);
    write_file(dir / "f", bytes);
    CHECK(read_file(dir / "f") == bytes);
    write_file(dir / "empty", "");
    CHECK(read_file(dir / "empty").empty());
    CHECK_THROWS_WITH_AS(read_file(dir / "none", "the head table"),
                         ((dir / "none").string() + ": cannot read the head table: No such file or directory").c_str(), Error);
    CHECK_THROWS_WITH_AS(read_file(dir.path()), (dir.path().string() + ": cannot read the file: Is a directory").c_str(), Error);
    // A file of a model directory must be a regular file: a FIFO is refused
    // at once (opening it would wait for a writer), and so is a device.
    REQUIRE(::mkfifo((dir / "fifo").c_str(), 0600) == 0);
    CHECK_THROWS_WITH_AS(read_file(dir / "fifo", "the tokenizer", FileKinds::regular_only),
                         ((dir / "fifo").string() + ": cannot read the tokenizer: not a regular file").c_str(), Error);
    CHECK_THROWS_WITH_AS(read_file("/dev/zero", "the model's config.json", FileKinds::regular_only),
                         "/dev/zero: cannot read the model's config.json: not a regular file", Error);
    CHECK_THROWS_WITH_AS(read_file(dir.path(), "the tokenizer", FileKinds::regular_only),
                         (dir.path().string() + ": cannot read the tokenizer: Is a directory").c_str(), Error);
    CHECK(read_file(dir / "f", "the file", FileKinds::regular_only) == bytes);
}

TEST_CASE("write errors name what was written: a file, or standard output") {
    std::FILE* full = std::fopen("/dev/full", "w");
    if (!full) return;
    std::setvbuf(full, nullptr, _IONBF, 0);
    const std::string expected = "out.kv: write error: " + std::system_category().message(ENOSPC);
    CHECK_THROWS_WITH_AS(write_all(Sink(full, "out.kv"), "bytes"), expected.c_str(), std::system_error);
    CHECK_THROWS_WITH_AS(write_all(Sink(full, "out.kv"), "bytes"), expected.c_str(), std::system_error);
    std::fclose(full);
    CHECK(Sink(stdout).name == "standard output");
    // AtomicFile's last bytes fail at commit(): named too.
    AtomicFile direct("/dev/full");
    std::fputs("x", direct.get().file);
    CHECK_THROWS_WITH_AS(direct.commit(), ("/dev/full: write error: " + std::system_category().message(ENOSPC)).c_str(), Error);
}

TEST_CASE("parse_id is strict") {
    CHECK(parse_id("0") == 0);
    CHECK(parse_id("31999") == 31999);
    CHECK(parse_id("2147483647") == 2147483647);
    for (const char* bad : {"x", "-3", "", "2147483648", "1.5", "+1", "12a", "0x10", " 1"})
        CHECK_THROWS_WITH_AS(parse_id(bad), doctest::Contains(fmt::format("bad token id '{}'", bad).c_str()), Error);
    CHECK_THROWS_WITH_AS(parse_id("1\r"), "bad token id '1\\x0d'", Error);
    const std::string cut = "bad token id '" + std::string(kQuotedBytes, '9') + "...'";
    CHECK_THROWS_WITH_AS(parse_id(std::string(kQuotedBytes + 8, '9')), cut.c_str(), Error);
}

TEST_CASE("parse_ids: spaces separate, an empty line is an empty sequence") {
    CHECK(ids_of("1 2 3") == std::vector<std::int32_t>{1, 2, 3});
    CHECK(ids_of("").empty());
    CHECK(ids_of("   ").empty());
    CHECK(ids_of(" 7  8\t9 ") == std::vector<std::int32_t>{7, 8, 9});
    CHECK_THROWS_WITH_AS(ids_of("1 two 3"), "bad token id 'two'", Error);
    CHECK_THROWS_WITH_AS(ids_of("1 -2"), "bad token id '-2'", Error);
}

TEST_CASE("IdStreamParser hands over each id when its delimiter arrives") {
    IdStreamParser parser;
    std::vector<std::int32_t> ids;
    int lines = 0;
    const auto on_id = [&](std::int32_t id) { ids.push_back(id); };
    const auto on_line = [&] { ++lines; };
    parser.feed("1", on_id, on_line);
    CHECK(ids.empty());  // "1" may continue as "12"
    parser.feed("2 3", on_id, on_line);
    CHECK(ids == std::vector<std::int32_t>{12});
    parser.feed("\n", on_id, on_line);
    CHECK(ids == std::vector<std::int32_t>{12, 3});
    CHECK(lines == 1);
    CHECK(parser.line() == 2);
    CHECK(!parser.finish(on_id));  // nothing after the last newline
    parser.feed("4 5", on_id, on_line);
    CHECK(parser.finish(on_id));
    CHECK(ids == std::vector<std::int32_t>{12, 3, 4, 5});

    // A huge garbage token fails early, without collecting it all.
    IdStreamParser long_one;
    const std::string cut = "bad token id '" + std::string(kQuotedBytes, '7') + "...'";
    CHECK_THROWS_WITH_AS(long_one.feed(std::string(1000, '7'), on_id, on_line), cut.c_str(), Error);

    // Fed one byte at a time, the result is the same as whole.
    const std::string text = "10 20 30\n\n5\n 6  7 \n8";
    std::vector<std::vector<std::int32_t>> whole(1), split(1);
    IdStreamParser a, b;
    a.feed(text, [&](std::int32_t id) { whole.back().push_back(id); }, [&] { whole.emplace_back(); });
    a.finish([&](std::int32_t id) { whole.back().push_back(id); });
    for (char c : text)
        b.feed({&c, 1}, [&](std::int32_t id) { split.back().push_back(id); }, [&] { split.emplace_back(); });
    b.finish([&](std::int32_t id) { split.back().push_back(id); });
    CHECK(whole == split);
    CHECK(whole.size() == 5);
    CHECK(whole[1].empty());
    CHECK(whole[4] == std::vector<std::int32_t>{8});
}
