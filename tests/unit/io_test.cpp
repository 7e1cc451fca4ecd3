// lib/io: the strict count parser every parser of counts shares, and whole-file reads.
#include <cstdint>

#include <doctest/doctest.h>

#include "io/number.hpp"
#include "io/read_file.hpp"
#include "temp_dir.hpp"
#include "tensor/error.hpp"

using namespace heads;
using heads::test::TempDir;
using heads::test::write_file;

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
                         ((dir / "none").string() + ": cannot read the head table").c_str(), Error);
    CHECK_THROWS_WITH_AS(read_file(dir.path()), (dir.path().string() + ": cannot read the file").c_str(), Error);
}
