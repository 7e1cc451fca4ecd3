#pragma once
// A fuzz target's expectation. Under libFuzzer (make fuzz) a failed one
// aborts, so the fuzzer saves the input; in the replay of the corpus that
// make test runs (replay_main.cpp, built with HEADS_FUZZ_REPLAY) it throws,
// and the replay names the case, goes on with the next, and fails at the end.

#include <cstdio>
#include <cstdlib>
#include <stdexcept>

namespace heads::fuzz {

struct Failure : std::logic_error {
    using std::logic_error::logic_error;
};

inline void check(bool ok, const char* what) {
    if (ok) return;
#ifdef HEADS_FUZZ_REPLAY
    throw Failure(what);
#else
    std::fprintf(stderr, "fuzz check failed: %s\n", what);
    std::abort();
#endif
}

}  // namespace heads::fuzz
