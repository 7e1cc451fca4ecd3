#pragma once
// The random numbers of one sequence. Every sequence a program generates owns
// its Rng, seeded from (--seed, the sequence's number), so a sequence's output
// depends on neither the threads nor the other sequences, and no state is
// global. xoshiro256** seeded through splitmix64: fast, and the same numbers
// on every platform (std:: distributions are not).

#include <cstdint>

namespace heads::sampling {

class Rng {
public:
    // `stream` separates the sequences of one run (the prompt's line number).
    explicit Rng(std::uint64_t seed = 0, std::uint64_t stream = 0);

    std::uint64_t next();
    // Uniform in [0, 1), 53 random bits.
    double uniform() { return double(next() >> 11) * 0x1.0p-53; }

private:
    std::uint64_t state_[4];
};

}  // namespace heads::sampling
