#pragma once
// Progress of long work on stderr, only when stderr is a terminal (a pipe or
// a log file gets nothing): one line rewritten in place, ended by done().

#include <string>

namespace heads::cli {

class Progress {
public:
    explicit Progress(std::string program);
    ~Progress();
    bool shown() const { return terminal_; }
    // Replaces the line with "PROGRAM: text".
    void update(const std::string& text);
    // Ends the line (also done by the destructor).
    void done();

private:
    std::string program_;
    bool terminal_ = false;
    bool open_ = false;
};

}  // namespace heads::cli
