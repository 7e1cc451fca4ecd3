#pragma once
// Where a long text may be cut so that a sentencepiece model, encoding each
// part on its own, gives exactly the ids of the whole text. Sentencepiece's
// memory grows by about 90 bytes per byte of one piece of text (a 10 MB line
// needs about 850 MB), so `tokenize --whole` encodes a book in parts.
//
// A cut is safe for a BPE model when nothing global happens across it:
//  - normalization is per character (no precompiled character map, so text
//    is only copied, with invalid UTF-8 read as U+FFFD) and spaces become U+2581;
//  - BPE merges only pieces of the vocabulary, so a merge crosses a cut at
//    an ASCII space only if some piece holds the character before the cut
//    followed by U+2581: those characters are read from the vocabulary, and
//    no cut is made after one (split_by_whitespace is what usually keeps
//    them out, but the vocabulary is checked, not the flag);
//  - no user-defined pieces (matched before normalization) and no unused
//    ones (resegmented by what was merged anywhere in the text);
//  - the part after a cut starts with U+2581, a known piece (or bytes), so
//    sentencepiece never joins it to an unknown piece before the cut;
//  - a dummy prefix: the part after a cut drops its leading space, and the
//    prefix puts the same U+2581 back.
// Any other model (unigram, nmt_nfkc normalization, ...) is never cut.

#include <cstddef>
#include <string>
#include <string_view>
#include <unordered_set>
#include <vector>

#include "tokenizer/model_spec.hpp"

namespace heads {

class TextCuts {
public:
    explicit TextCuts(const ModelSpec& spec);

    // Whether this model's text may be cut at all.
    bool allowed() const { return allowed_; }

    // `text` in parts of about `part_bytes` (more when no safe cut comes
    // sooner), views into `text`: encoding each part on its own and joining
    // the ids gives the ids of `text`. One part when the model may not be cut.
    std::vector<std::string_view> parts(std::string_view text, std::size_t part_bytes) const;

private:
    bool safe_cut(std::string_view text, std::size_t at) const;

    bool allowed_ = false;
    bool drops_leading_space_ = false;  // the dummy prefix stands for the space at the cut
    bool cuts_after_space_ = false;     // no piece joins U+2581 to a U+2581 before it
    std::unordered_set<std::string> joined_to_space_;  // characters some piece holds right before a U+2581
};

}  // namespace heads
