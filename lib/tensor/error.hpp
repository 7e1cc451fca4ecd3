#pragma once
// The one exception type of heads for errors a user can act on: its message
// is the whole story ("FILE: frame 3: truncated ..."), printed by the tool's
// edge after "PROG: ". Library code throws it; only tools decide to exit.

#include <stdexcept>
#include <string>

#include <fmt/format.h>

namespace heads {

class Error : public std::runtime_error {
public:
    explicit Error(const std::string& message) : std::runtime_error(message) {}
    template <class... Args>
    explicit Error(fmt::format_string<Args...> format, Args&&... args)
        : std::runtime_error(fmt::format(format, std::forward<Args>(args)...)) {}
};

// Bad usage found after option parsing (conflicting options, a bad value):
// the tool's edge prints it with the usage hint and exits 2.
class UsageError : public Error {
public:
    using Error::Error;
};

}  // namespace heads
