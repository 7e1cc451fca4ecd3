#pragma once
// Ctrl-C while a program builds an output under a temporary name: the
// interrupting signals (SIGINT, SIGTERM, SIGHUP) are held back while a
// DeferredSignals lives, the builder asks check() at safe points, and an
// arrived signal becomes an exception, so the temporary output is removed
// as the stack unwinds; the destructor then lets the signal through and the
// program dies of it as it would have (status 128 + signal in a shell).

#include <signal.h>

namespace heads {

class DeferredSignals {
public:
    DeferredSignals();   // holds the signals back (this thread; the writer runs on one)
    DeferredSignals(const DeferredSignals&) = delete;
    DeferredSignals& operator=(const DeferredSignals&) = delete;
    ~DeferredSignals();  // restores the old mask: a pending signal is delivered now

    // Throws heads::Error "interrupted" when one of the signals is pending.
    void check() const;

private:
    sigset_t old_;
};

}  // namespace heads
