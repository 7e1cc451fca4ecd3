#include <doctest/doctest.h>

#include <cerrno>
#include <cstdint>
#include <cstdlib>
#include <vector>
#include <system_error>

#include <sys/wait.h>
#include <unistd.h>

#include "cli/ids.hpp"
#include "cli/options.hpp"
#include "cli/run.hpp"
#include "temp_dir.hpp"
#include "tensor/error.hpp"

using namespace heads;
using heads::test::TempDir;
using heads::test::read_file;
using heads::test::write_file;

namespace {

struct Outcome {
    int status;
    std::string out;
    std::string err;
};

// Runs cli::run in a child process (it closes stdout), capturing its output.
Outcome run_child(std::vector<std::string> args, const std::function<void()>& body, bool close_stdout_early = false,
                  const cli::FlagNames& flags = {}) {
    TempDir dir;
    const pid_t pid = ::fork();
    if (pid == 0) {
        std::freopen((dir / "err").c_str(), "w", stderr);
        if (close_stdout_early) {
            int fds[2];
            if (::pipe(fds) != 0) std::_Exit(99);
            ::close(fds[0]);  // nobody reads: writes fail with EPIPE
            ::dup2(fds[1], STDOUT_FILENO);
        } else {
            std::freopen((dir / "out").c_str(), "w", stdout);
        }
        CLI::App app{"a test program", "prog"};
        int number = 0;
        app.add_option("-n", number, "a number")->check(CLI::PositiveNumber);
        std::vector<char*> argv;
        for (auto& arg : args) argv.push_back(arg.data());
        const int status = cli::run(app, int(argv.size()), argv.data(), body, flags);
        std::fflush(stderr);
        std::_Exit(status);
    }
    int status = 0;
    ::waitpid(pid, &status, 0);
    return {WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status), read_file(dir / "out"),
            read_file(dir / "err")};
}

std::string error_of(const std::function<void()>& call) {
    try {
        call();
    } catch (const std::exception& error) {
        return error.what();
    }
    return "no error";
}

}  // namespace

TEST_CASE("run: success, --help, --version") {
    auto ok = run_child({"prog", "-n", "3"}, [] { std::fputs("hello\n", stdout); });
    CHECK(ok.status == 0);
    CHECK(ok.out == "hello\n");
    CHECK(ok.err.empty());
    auto help = run_child({"prog", "--help"}, [] { FAIL("body ran"); });
    CHECK(help.status == 0);
    CHECK(help.out.find("a test program") != std::string::npos);
    auto version = run_child({"prog", "--version"}, [] {});
    CHECK(version.status == 0);
    CHECK(version.out.rfind("prog (heads) ", 0) == 0);
}

TEST_CASE("run: bad usage exits 2 with the usage line") {
    auto bad = run_child({"prog", "--bogus"}, [] {});
    CHECK(bad.status == 2);
    CHECK(bad.err.rfind("prog: The following argument was not expected: --bogus\nUsage: prog [OPTIONS]\n", 0) == 0);
    CHECK(bad.err.find("Try 'prog --help'") != std::string::npos);
    auto value = run_child({"prog", "-n", "0"}, [] {});
    CHECK(value.status == 2);
    auto usage = run_child({"prog"}, [] { throw UsageError("give -n or -m, not both"); });
    CHECK(usage.status == 2);
    CHECK(usage.err.rfind("prog: give -n or -m, not both\nUsage:", 0) == 0);
}

TEST_CASE("run: an error is one line and exit 1") {
    auto failed = run_child({"prog"}, [] { throw Error("in.txt:3: bad token id 'x'"); });
    CHECK(failed.status == 1);
    CHECK(failed.err == "prog: in.txt:3: bad token id 'x'\n");
    auto other = run_child({"prog"}, [] { throw std::runtime_error("boom"); });
    CHECK(other.status == 1);
    CHECK(other.err == "prog: boom\n");
}

TEST_CASE("run: a closed pipe ends quietly with 0, other write errors are errors") {
    auto piped = run_child({"prog"}, [] {
        std::string line(1000, 'x');
        for (int i = 0; i < 100000; ++i) heads::write_all(stdout, line);
    }, true);
    CHECK(piped.status == 0);
    CHECK(piped.err.empty());
    // Output that only fails at the final flush is still caught.
    auto late = run_child({"prog"}, [] { std::fputs("short\n", stdout); }, true);
    CHECK(late.status == 0);
    CHECK(late.err.empty());
    auto full = run_child({"prog"}, [] { throw std::system_error(ENOSPC, std::generic_category(), "write error"); });
    CHECK(full.status == 1);
    CHECK(full.err == "prog: write error: No space left on device\n");
}

TEST_CASE("run: a failed close of stdout is an error") {
    if (!std::filesystem::exists("/dev/full")) return;
    const pid_t pid = ::fork();
    if (pid == 0) {
        std::freopen("/dev/full", "w", stdout);
        std::freopen("/dev/null", "w", stderr);
        CLI::App app{"", "prog"};
        char name[] = "prog";
        char* argv[] = {name};
        std::_Exit(cli::run(app, 1, argv, [] { std::fputs("text\n", stdout); }));
    }
    int status = 0;
    ::waitpid(pid, &status, 0);
    CHECK(WEXITSTATUS(status) == 1);
}

TEST_CASE("IdReader: FILE:LINE in every error, vocabulary range") {
    TempDir dir;
    write_file(dir / "a", "1 2\n\n3\n");
    write_file(dir / "b", "4\n5 x 6\n");
    cli::IdReader reader({(dir / "a").string(), (dir / "b").string()}, 100);
    std::vector<std::int32_t> ids;
    REQUIRE(reader.next(ids));
    CHECK(ids == std::vector<std::int32_t>{1, 2});
    REQUIRE(reader.next(ids));
    CHECK(ids.empty());
    REQUIRE(reader.next(ids));
    REQUIRE(reader.next(ids));
    CHECK(ids == std::vector<std::int32_t>{4});
    CHECK(error_of([&] { reader.next(ids); }) == (dir / "b").string() + ":2: bad token id 'x'");

    write_file(dir / "c", "1\n2 100\n");
    cli::IdReader ranged({(dir / "c").string()}, 100);
    ranged.next(ids);
    CHECK(error_of([&] { ranged.next(ids); }) ==
          (dir / "c").string() + ":2: token id 100 is out of range (vocabulary of 100)");
    CHECK(error_of([&] { cli::IdReader({(dir / "none").string()}).next(ids); }) ==
          (dir / "none").string() + ": No such file or directory");
}

TEST_CASE("LineReader: lines of several files, a last line without newline, long lines") {
    TempDir dir;
    const std::string huge(3'000'000, 'a');  // longer than one read
    write_file(dir / "a", "one\ntwo");
    write_file(dir / "b", huge + "\n\nlast\n");
    cli::LineReader reader({(dir / "a").string(), (dir / "b").string()});
    std::vector<std::string> lines;
    std::string_view line;
    while (reader.next(line)) lines.emplace_back(line);
    REQUIRE(lines.size() == 5);
    CHECK(lines[1] == "two");
    CHECK(lines[2] == huge);
    CHECK(lines[3].empty());
    CHECK(lines[4] == "last");
    CHECK(reader.where() == (dir / "b").string() + ":3");
}

TEST_CASE("model lookup: -m, then $HEADS_MODEL, then the default") {
    TempDir dir;
    std::filesystem::create_directory(dir / "m1");
    std::filesystem::create_directory(dir / "m2");
    ::unsetenv("HEADS_MODEL");
    CHECK(cli::find_model((dir / "m1").string()) == dir / "m1");
    CHECK(error_of([&] { cli::find_model((dir / "nope").string()); }) == (dir / "nope").string() + ": no such model");
    ::setenv("HEADS_MODEL", (dir / "m2").c_str(), 1);
    CHECK(cli::find_model("") == dir / "m2");
    CHECK(cli::find_model((dir / "m1").string()) == dir / "m1");
    ::setenv("HEADS_MODEL", (dir / "gone").c_str(), 1);
    CHECK(error_of([] { cli::find_model(""); }).find("(from $HEADS_MODEL)") != std::string::npos);
    ::unsetenv("HEADS_MODEL");
    // This test binary has no default model beside it.
    const auto fallback = cli::default_model_path();
    CHECK(fallback.filename() == "kjv");
    CHECK(fallback.parent_path().filename() == "models");
    if (!std::filesystem::exists(fallback))
        CHECK(error_of([] { cli::find_model(""); }).rfind("no model: give -m DIR or set HEADS_MODEL", 0) == 0);
}

TEST_CASE("threads: 0 means every core") {
    CHECK(cli::thread_count(3) == 3);
    CHECK(cli::thread_count(0) >= 1);
}

TEST_CASE("Output: a file appears whole at commit, or not at all") {
    TempDir dir;
    {
        cli::Output out((dir / "o").string());
        std::fputs("partial", out.get().file);
        CHECK(!std::filesystem::exists(dir / "o"));
        // destroyed without commit: an error happened
    }
    CHECK(std::filesystem::is_empty(dir.path()));
    {
        cli::Output out((dir / "o").string());
        std::fputs("whole\n", out.get().file);
        out.commit();
    }
    CHECK(read_file(dir / "o") == "whole\n");
    CHECK(cli::Output("-").get().file == stdout);
    CHECK(cli::Output("").get().file == stdout);
    // Write errors name what they write to.
    CHECK(cli::Output("-").get().name == "standard output");
    CHECK(cli::Output((dir / "o").string()).get().name == (dir / "o").string());
}

TEST_CASE("--precision: one spelling and one check for every tool") {
    CLI::App app;
    std::string precision = "auto";
    cli::add_precision_option(app, precision);
    const char* f32[] = {"t", "--precision", "f32"};
    app.parse(3, f32);
    CHECK(precision == "f32");
    const char* f16[] = {"t", "--precision", "f16"};
    CHECK_THROWS_AS(app.parse(3, f16), CLI::ValidationError);
}

TEST_CASE("number options: the value the text says, within the type, or bad usage") {
    const auto parse = [](auto& value, const std::string& text) {
        CLI::App app;
        cli::add_number(app, "--x", value, "");
        app.parse(std::vector<std::string>{text, "--x"});  // arguments in reverse
    };
    std::int64_t big = 0;
    parse(big, "9223372036854775807");
    CHECK(big == INT64_MAX);
    parse(big, "010");  // decimal, not octal
    CHECK(big == 10);
    parse(big, "+12");
    CHECK(big == 12);
    CHECK_THROWS_WITH_AS(parse(big, "-9223372036854775809"),  // was clamped to INT64_MIN
                         "--x: not a number from -9223372036854775808 to 9223372036854775807: '-9223372036854775809'",
                         CLI::ValidationError);
    CHECK_THROWS_AS(parse(big, "0x10"), CLI::ValidationError);
    float real = 0;
    parse(real, "3.4e38");
    CHECK(real == 3.4e38f);
    CHECK_THROWS_WITH_AS(parse(real, "1e39"),  // became inf
                         "--x: must be a finite number of magnitude at most 3.40282e+38, not '1e39'", CLI::ValidationError);
    double wide = 0;
    parse(wide, "1e39");
    CHECK(wide == 1e39);
    std::uint64_t seed = 0;
    parse(seed, "010");
    CHECK(seed == 10);
    CHECK_THROWS_AS(parse(seed, "-1"), CLI::ValidationError);
}

TEST_CASE("parse_counts: exactly n counts, each fitting an int") {
    CHECK(cli::parse_counts("5,4,5", 3, "--lookahead") == std::vector<int>{5, 4, 5});
    CHECK_THROWS_WITH_AS(cli::parse_counts("5,4,5,", 3, "--lookahead"), "--lookahead: bad number '' in '5,4,5,'", UsageError);
    CHECK_THROWS_WITH_AS(cli::parse_counts("5,4", 3, "--lookahead"), "--lookahead: 3 numbers expected, not '5,4'", UsageError);
    CHECK_THROWS_AS(cli::parse_counts("5,4,2147483648", 3, "--lookahead"), UsageError);
}

TEST_CASE("run: the tool names its flag for the parameter a library error is about") {
    const cli::FlagNames flags{{"temperature", "--temp"}};
    const auto bad_temperature = [] { throw UsageError(Param{"temperature"}, "the temperature must be >= 0, not -1"); };
    const Outcome usage = run_child({"prog"}, bad_temperature, false, flags);
    CHECK(usage.status == 2);
    CHECK(usage.err.rfind("prog: --temp: the temperature must be >= 0, not -1\n", 0) == 0);
    const Outcome runtime = run_child({"prog"}, [] { throw Error(Param{"ctx"}, "a window of 2 tokens is too small"); },
                                      false, {{"ctx", "--ctx"}});
    CHECK(runtime.status == 1);
    CHECK(runtime.err == "prog: --ctx: a window of 2 tokens is too small\n");
    // Another front end without the name: the library's words alone.
    const Outcome plain = run_child({"prog"}, bad_temperature);
    CHECK(plain.err.rfind("prog: the temperature must be >= 0, not -1\n", 0) == 0);
}
