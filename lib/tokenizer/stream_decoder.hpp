#pragma once
// Streaming detokenization: ids arrive one at a time (as decode writes them)
// and each piece's text is handed out as soon as its bytes form complete
// UTF-8. The concatenation of everything handed out for a sequence equals
// spm_decode of the whole sequence, byte for byte: the leading space of the
// first piece is dropped at the start of a sequence as sentencepiece drops
// it, byte pieces <0xNN> are joined into characters, and bytes that cannot
// form UTF-8 become U+FFFD, all by sentencepiece's rules.

#include <string>

#include "tokenizer/tokenizer.hpp"

namespace heads {

class StreamDecoder {
public:
    explicit StreamDecoder(const Tokenizer& tokenizer) : tokenizer_(&tokenizer) {}

    // Appends to `out` the text that `id` completes (possibly nothing while
    // a character's bytes are still arriving). Throws heads::Error for an id
    // outside the vocabulary.
    void push(int id, std::string& out);
    // Ends the sequence: appends what bytes are pending (invalid ones as
    // U+FFFD) and starts the next sequence afresh.
    void finish(std::string& out);

private:
    void drain_bytes(std::string& out, bool final);
    void append(std::string& out, std::string_view text);

    const Tokenizer* tokenizer_;
    std::string pending_;     // bytes of byte pieces not yet a complete character
    bool emitted_ = false;    // anything handed out in this sequence
    bool at_start_ = true;    // sentencepiece's is_bos_ws
    bool start_seen_ = false; // sentencepiece's bos_ws_seen
};

}  // namespace heads
