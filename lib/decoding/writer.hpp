#pragma once
// decode's output: each generated token written and flushed the moment it
// is chosen, as ids (one line per sequence, ids separated by spaces) or,
// with a tokenizer and `text`, as text (streamed through the tokenizer's
// StreamDecoder, a newline after each sequence). Stop strings are matched on
// the detokenized text: generation stops after the token that completes one;
// ids cannot be cut, so that token is written, while text is cut right before
// the stop string. --logprobs records go to their own TSV.

#include <cstdint>
#include <cstdio>
#include <memory>
#include <string>
#include <vector>

#include "decoding/generation.hpp"
#include "io/output.hpp"
#include "decoding/logprobs.hpp"
#include "tokenizer/stream_decoder.hpp"
#include "tokenizer/tokenizer.hpp"

namespace heads::decoding {

class TokenWriter final : public TokenSink {
public:
    // tokenizer: needed for text and stop strings (else null). logprobs: may be null.
    TokenWriter(Sink out, const Tokenizer* tokenizer, bool text, std::vector<std::string> stops,
                LogprobsWriter* logprobs);

    bool push(std::int32_t token, const Logprobs* logprobs) override;
    void end() override;
    int logprobs_k() const override { return logprobs_ ? logprobs_->k() : 0; }

private:
    // Writes `text_` except a tail that may still become a stop string.
    void write_text(bool all);

    Sink out_;
    const Tokenizer* tokenizer_;
    bool text_mode_;
    std::vector<std::string> stops_;
    LogprobsWriter* logprobs_;
    std::unique_ptr<StreamDecoder> decoder_;
    std::string text_;  // detokenized, not yet written (text mode) or kept for matching
    std::string piece_;
    std::size_t longest_stop_ = 0;
    std::int64_t sequence_ = 0, step_ = 0;
    bool stopped_ = false;
};

}  // namespace heads::decoding
