// lib/eval: what infer's frame and perplexity options parse and check.
#include <doctest/doctest.h>

#include "eval/frames.hpp"
#include "tensor/error.hpp"

using namespace heads;

TEST_CASE("layer lists: L,L,... or all, each a layer the model has") {
    CHECK(parse_layer_list("0,2", 3, "--hidden") == std::vector<std::int64_t>{0, 2});
    CHECK(parse_layer_list("all", 3, "--hidden") == std::vector<std::int64_t>{0, 1, 2});
    CHECK(parse_layer_list("2,0", 3, "--hidden") == std::vector<std::int64_t>{2, 0});
    CHECK_THROWS_WITH_AS(parse_layer_list("3", 3, "--hidden"), "--hidden '3': layers are numbered 0 to 2", UsageError);
    for (const char* bad : {"", "1,", "x", "-1", "-0", "+1", "1 ", "0;1"})
        CHECK_THROWS_WITH_AS(parse_layer_list(bad, 3, "--hidden"), doctest::Contains("is not a layer number"), UsageError);
}

TEST_CASE("a layer list names each layer once") {
    CHECK_THROWS_WITH_AS(parse_layer_list("0,0", 3, "--hidden"), "--hidden '0,0': layer 0 is given twice", UsageError);
    CHECK_THROWS_WITH_AS(parse_layer_list("1,2,1", 3, "--attention"), "--attention '1,2,1': layer 1 is given twice",
                         UsageError);
}

TEST_CASE("a layer list's messages quote the spec as given") {
    // The spec in quotes, escaped and cut as every echoed input is (tensor/quote.hpp).
    CHECK_THROWS_WITH_AS(parse_layer_list("0,x", 3, "--hidden"),
                         "--hidden '0,x': 'x' is not a layer number (want L,L,... or all)", UsageError);
    CHECK_THROWS_WITH_AS(parse_layer_list(std::string_view("0,\0", 3), 3, "--hidden"),
                         "--hidden '0,\\x00': '\\x00' is not a layer number (want L,L,... or all)", UsageError);
    const std::string nines(200, '9');
    CHECK_THROWS_WITH_AS(parse_layer_list("0," + nines, 3, "--hidden"),
                         ("--hidden '0," + nines.substr(0, 46) + "...': '" + nines.substr(0, 48) +
                          "...' is not a layer number (want L,L,... or all)")
                             .c_str(),
                         UsageError);
}
