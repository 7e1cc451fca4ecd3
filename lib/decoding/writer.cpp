#include "decoding/writer.hpp"

#include <algorithm>

#include <fmt/format.h>

#include "io/output.hpp"
#include "tensor/error.hpp"

namespace heads::decoding {

TokenWriter::TokenWriter(Sink out, const Tokenizer* tokenizer, bool text, std::vector<std::string> stops,
                         LogprobsWriter* logprobs)
    : out_(std::move(out)), tokenizer_(tokenizer), text_mode_(text), stops_(std::move(stops)), logprobs_(logprobs) {
    for (const auto& stop : stops_) {
        if (stop.empty()) throw UsageError(Param{"stop"}, "an empty stop string");
        longest_stop_ = std::max(longest_stop_, stop.size());
    }
    if ((text_mode_ || !stops_.empty()) && !tokenizer_)
        throw Error(Param{"text_or_stop"}, "text and stop strings need the model's tokenizer.model");
    if (tokenizer_) decoder_ = std::make_unique<StreamDecoder>(*tokenizer_);
}

bool TokenWriter::push(std::int32_t token, const Logprobs* logprobs) {
    if (logprobs && logprobs_) logprobs_->write(sequence_, step_, token, *logprobs);
    ++step_;
    if (!text_mode_) {
        write_all(out_, step_ == 1 ? fmt::format("{}", token) : fmt::format(" {}", token));
        flush(out_);
    }
    if (!decoder_) return true;
    piece_.clear();
    decoder_->push(token, piece_);
    text_ += piece_;
    // A stop string may end inside the new piece, or straddle the last ones.
    for (const auto& stop : stops_) {
        const auto at = text_.find(stop);
        if (at == std::string::npos) continue;
        text_.resize(at);
        stopped_ = true;
    }
    if (text_mode_) write_text(stopped_);
    // Keep only what a stop string could still end in.
    if (!text_mode_ && text_.size() > longest_stop_) text_.erase(0, text_.size() - longest_stop_);
    return !stopped_;
}

void TokenWriter::write_text(bool all) {
    std::size_t keep = 0;
    if (!all)
        for (const auto& stop : stops_)
            for (std::size_t n = std::min(stop.size() - 1, text_.size()); n > keep; --n)
                if (text_.compare(text_.size() - n, n, stop, 0, n) == 0) {
                    keep = n;
                    break;
                }
    const std::size_t ready = text_.size() - keep;
    if (ready == 0) return;
    write_all(out_, std::string_view(text_).substr(0, ready));
    flush(out_);
    text_.erase(0, ready);
}

void TokenWriter::end() {
    if (decoder_) {
        piece_.clear();
        decoder_->finish(piece_);
        if (text_mode_ && !stopped_) {
            text_ += piece_;
            write_text(true);
        }
    }
    write_all(out_, "\n");
    flush(out_);
    text_.clear();
    stopped_ = false;
    step_ = 0;
    ++sequence_;
}

}  // namespace heads::decoding
