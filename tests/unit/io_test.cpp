// lib/io: the strict count parser every parser of counts shares.
#include <cstdint>

#include <doctest/doctest.h>

#include "io/number.hpp"

using namespace heads;

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
