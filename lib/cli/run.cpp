#include "cli/run.hpp"

#include <cerrno>
#include <csignal>
#include <cstdio>
#include <new>
#include <system_error>

#include <unistd.h>

#include <fmt/format.h>

#include "io/output.hpp"
#include "tensor/error.hpp"

namespace heads::cli {
namespace {

bool is_closed_pipe(const std::system_error& error) { return error.code().value() == EPIPE; }

int usage_error(const CLI::App& app, const std::string& message) {
    const std::string& prog = app.get_name();
    // The "Usage: ..." line of the help text.
    const std::string help = app.help();
    const auto start = help.find("Usage:");
    const std::string usage = start == std::string::npos ? "" : help.substr(start, help.find('\n', start) + 1 - start);
    fmt::print(stderr, "{}: {}\n{}Try '{} --help' for more information.\n", prog, message, usage, prog);
    return 2;
}

int runtime_error(const std::string& prog, const char* message) {
    std::fflush(stdout);
    fmt::print(stderr, "{}: {}\n", prog, message);
    return 1;
}

// Flush and close stdout, reporting what went wrong; EPIPE is not an error.
int close_stdout(const std::string& prog) {
    const bool flushed = std::fflush(stdout) == 0;
    int error = flushed ? 0 : errno;
    if (std::fclose(stdout) != 0 && flushed) error = errno;
    if (error == 0 || error == EPIPE) return 0;
    fmt::print(stderr, "{}: standard output: write error: {}\n", prog, std::strerror(error));
    return 1;
}

// The message with the tool's flag for the parameter it is about, if any.
// Parameters of the options every tool adds the same way (cli/options.hpp).
const FlagNames kCommonFlags{{"threads", "--threads"}};

std::string with_flag(const Error& error, const FlagNames& flags) {
    for (const FlagNames* names : {&flags, &kCommonFlags})
        if (const auto flag = names->find(error.param()); flag != names->end())
            return fmt::format("{}: {}", flag->second, error.what());
    return error.what();
}

// One value per use of an option: CLI11 lets an option that collects a
// vector (--stop, --logit-bias, --logprobs K FILE) go on taking the
// arguments after it, so `--stop . prompt.ids` made the file a second stop
// string. A repeatable option is repeated instead: --stop a --stop b.
void one_value_per_use(CLI::App& app) {
    for (CLI::Option* option : app.get_options())
        if (option->nonpositional()) option->allow_extra_args(false);
}

}  // namespace

int run(CLI::App& app, int argc, char** argv, const std::function<void()>& body, const FlagNames& flags,
        const std::function<std::string()>& version_detail) {
    // A closed pipe must show up as EPIPE from write(), not kill the process.
    std::signal(SIGPIPE, SIG_IGN);
    // Big blocks into pipes and files; line by line on a terminal. Tools
    // flush themselves where a result must leave at once.
    if (!::isatty(STDOUT_FILENO)) std::setvbuf(stdout, nullptr, _IOFBF, std::size_t(1) << 20);

    const std::string prog = app.get_name();
    app.set_version_flag("--version", fmt::format("{} (heads) {}", prog, HEADS_VERSION));
    try {
        try {
            one_value_per_use(app);
            app.parse(argc, argv);
        } catch (const CLI::CallForHelp&) {
            write_all(stdout, app.help());
            return close_stdout(prog);
        } catch (const CLI::CallForAllHelp&) {
            write_all(stdout, app.help("", CLI::AppFormatMode::All));
            return close_stdout(prog);
        } catch (const CLI::CallForVersion& version) {
            write_all(stdout, fmt::format("{}\n", version.what()));
            if (version_detail) write_all(stdout, fmt::format("{}\n", version_detail()));
            return close_stdout(prog);
        } catch (const CLI::ParseError& error) {
            return usage_error(app, error.what());
        }
        body();
    } catch (const UsageError& error) {
        return usage_error(app, with_flag(error, flags));
    } catch (const Error& error) {
        return runtime_error(prog, with_flag(error, flags).c_str());
    } catch (const std::system_error& error) {
        if (is_closed_pipe(error)) return 0;
        return runtime_error(prog, error.what());
    } catch (const std::bad_alloc&) {
        return runtime_error(prog, "out of memory");
    } catch (const std::exception& error) {
        return runtime_error(prog, error.what());
    }
    return close_stdout(prog);
}

}  // namespace heads::cli
