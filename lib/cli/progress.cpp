#include "cli/progress.hpp"

#include <unistd.h>

#include <cstdio>

namespace heads::cli {

Progress::Progress(std::string program) : program_(std::move(program)), terminal_(::isatty(STDERR_FILENO) == 1) {}

Progress::~Progress() { done(); }

void Progress::update(const std::string& text) {
    if (!terminal_) return;
    std::fprintf(stderr, "\r\033[K%s: %s", program_.c_str(), text.c_str());
    std::fflush(stderr);
    open_ = true;
}

void Progress::done() {
    if (!open_) return;
    std::fputc('\n', stderr);
    open_ = false;
}

}  // namespace heads::cli
