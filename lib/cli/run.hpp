#pragma once
// The edge of every program, where exceptions become one stderr line and an
// exit status:
//   int main(int argc, char** argv) {
//       CLI::App app{"Turn text into token ids", "tokenize"};
//       ... options ...
//       return heads::cli::run(app, argc, argv, [&] { ... });
//   }

#include <functional>
#include <string>

#include <CLI/CLI.hpp>

namespace heads::cli {

// Adds --version, parses the options, runs `body`, then flushes and closes
// stdout. Returns the exit status:
//   0  done, --help, --version, or stdout was a pipe closed early (EPIPE): quiet
//   1  heads::Error or any other exception: "PROG: message" on stderr
//   2  bad usage (an option parse error or heads::UsageError):
//      "PROG: message", the usage line and "Try 'PROG --help'..."
// A failed write, flush or close of stdout is an error (1), as in BSD cat.
// version_detail, when given, adds its line to --version's.
int run(CLI::App& app, int argc, char** argv, const std::function<void()>& body,
        const std::function<std::string()>& version_detail = {});

}  // namespace heads::cli
