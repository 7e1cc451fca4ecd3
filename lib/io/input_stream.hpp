#pragma once
// Buffered reading of a file or of stdin ("-") through read(2), by lines, by
// chunks or by exact byte counts. Before every read(2) that may block it
// flushes stdout: a tool whose input arrives slowly (a pipe, a terminal)
// writes each result as soon as it has it, and a tool reading a big file
// writes in big blocks, with one rule and no flush per line.

#include <cstddef>
#include <span>
#include <string>
#include <string_view>
#include <vector>

namespace heads {

class InputStream {
public:
    // "-" is stdin. Throws heads::Error "PATH: reason" when it cannot be opened.
    explicit InputStream(const std::string& path);
    InputStream(const InputStream&) = delete;
    InputStream& operator=(const InputStream&) = delete;
    ~InputStream();

    // "<stdin>" or the path, for messages.
    const std::string& name() const { return name_; }

    // The next line without its '\n' (a last line without one counts too);
    // false at the end. The view is valid until the next call.
    bool next_line(std::string_view& line);
    // Whether a whole line is buffered, so next_line will not block.
    bool has_line() const;
    // Number of the line next_line returned last (1-based).
    std::size_t line_number() const { return line_number_; }

    // What is buffered, or else the result of one read(2); empty at the end.
    std::string_view next_chunk();

    // Up to bytes.size() bytes, fewer only at the end; returns the count.
    std::size_t read(std::span<std::byte> bytes);

private:
    bool fill();  // one read(2) appended to the buffer; false at the end

    int fd_ = -1;
    bool owns_fd_ = false;
    bool at_end_ = false;
    std::string name_;
    std::vector<char> buffer_;
    std::size_t begin_ = 0;  // first unconsumed byte
    std::size_t end_ = 0;    // one past the last buffered byte
    std::size_t line_number_ = 0;
};

}  // namespace heads
