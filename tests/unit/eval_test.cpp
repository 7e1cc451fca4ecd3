// lib/eval: what infer's frame and perplexity options parse and check.
#include <doctest/doctest.h>

#include "eval/frames.hpp"
#include "tensor/error.hpp"

using namespace heads;

TEST_CASE("layer lists: L,L,... or all, each a layer the model has") {
    CHECK(parse_layer_list("0,2", 3, "--hidden") == std::vector<std::int64_t>{0, 2});
    CHECK(parse_layer_list("all", 3, "--hidden") == std::vector<std::int64_t>{0, 1, 2});
    CHECK_THROWS_WITH_AS(parse_layer_list("3", 3, "--hidden"), "--hidden 3: layers are numbered 0 to 2", Error);
    for (const char* bad : {"", "1,", "x", "-1", "-0", "+1", "1 ", "0;1"})
        CHECK_THROWS_WITH_AS(parse_layer_list(bad, 3, "--hidden"), doctest::Contains("is not a layer number"), Error);
}
