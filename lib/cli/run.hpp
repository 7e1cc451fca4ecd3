#pragma once
// The edge of every program, where exceptions become one stderr line and an
// exit status:
//   int main(int argc, char** argv) {
//       CLI::App app{"Turn text into token ids", "tokenize"};
//       ... options ...
//       return heads::cli::run(app, argc, argv, [&] { ... });
//   }

#include <functional>
#include <map>
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
// A heads::Error about a parameter (Error::param()) named in `flags` is
// printed "PROG: FLAG: message", FLAG being how this tool spells it.
// version_detail, when given, adds its line to --version's.
using FlagNames = std::map<std::string, std::string, std::less<>>;
int run(CLI::App& app, int argc, char** argv, const std::function<void()>& body, const FlagNames& flags = {},
        const std::function<std::string()>& version_detail = {});

}  // namespace heads::cli
