// lib/heads: head tables read back and ranked.
#include <doctest/doctest.h>

#include "heads/head_table.hpp"
#include "temp_dir.hpp"
#include "tensor/error.hpp"

using namespace heads;
using heads::test::TempDir;
using heads::test::write_file;

TEST_CASE("head table: read, then the top heads of a column") {
    TempDir dir;
    write_file(dir / "t.tsv",
               "# model abc123\n# made by hand\nlayer\thead\tkv_head\tretrieval\tsink\n"
               "0\t0\t0\t0.100000\t0.900000\n0\t1\t0\t0.500000\t0.200000\n1\t0\t0\t0.500000\t0.100000\n"
               "1\t1\t0\tnan\t0.300000\n");
    const HeadTable table = read_head_table(dir / "t.tsv");
    CHECK(table.model == "abc123");
    CHECK(table.columns == std::vector<std::string>{"retrieval", "sink"});
    CHECK(table.top("retrieval", 2) == std::vector<HeadRef>{{0, 1}, {1, 0}});  // a tie: lower layer first
    CHECK(table.top("sink", 1) == std::vector<HeadRef>{{0, 0}});
    CHECK(table.top("retrieval", 9).size() == 4);
    CHECK(table.top("retrieval", 9).back() == HeadRef{1, 1});  // nan ranks last
    CHECK_THROWS_AS(table.top("induction", 1), Error);
}
