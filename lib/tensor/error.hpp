#pragma once
// The one exception type of heads for errors a user can act on: its message
// is the whole story ("FILE: frame 3: truncated ..."), printed by the tool's
// edge after "PROG: ". Library code throws it; only tools decide to exit.

#include <stdexcept>
#include <string>
#include <string_view>

#include <fmt/format.h>

namespace heads {

// The parameter a message is about, by its name in the library's options
// ("temperature" for SamplingParams::temperature). The library describes the
// value and never spells a tool's flag; a tool that reads the parameter from
// a flag puts the flag in front at its edge (cli::run's flag names).
struct Param {
    std::string_view name;
};

class Error : public std::runtime_error {
public:
    explicit Error(const std::string& message) : std::runtime_error(message) {}
    template <class... Args>
    explicit Error(fmt::format_string<Args...> format, Args&&... args)
        : std::runtime_error(fmt::format(format, std::forward<Args>(args)...)) {}
    template <class... Args>
    Error(Param param, fmt::format_string<Args...> format, Args&&... args)
        : std::runtime_error(fmt::format(format, std::forward<Args>(args)...)), param_(param.name) {}

    // The parameter the error is about; empty when it is about no single one.
    const std::string& param() const { return param_; }

private:
    std::string param_;
};

// Bad usage found after option parsing (conflicting options, a bad value):
// the tool's edge prints it with the usage hint and exits 2.
class UsageError : public Error {
public:
    using Error::Error;
};

}  // namespace heads
