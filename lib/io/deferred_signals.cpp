#include "io/deferred_signals.hpp"

#include <pthread.h>

#include "tensor/error.hpp"

namespace heads {
namespace {

sigset_t interrupting() {
    sigset_t set;
    sigemptyset(&set);
    for (const int signal : {SIGINT, SIGTERM, SIGHUP}) sigaddset(&set, signal);
    return set;
}

}  // namespace

DeferredSignals::DeferredSignals() {
    const sigset_t set = interrupting();
    pthread_sigmask(SIG_BLOCK, &set, &old_);
}

DeferredSignals::~DeferredSignals() { pthread_sigmask(SIG_SETMASK, &old_, nullptr); }

void DeferredSignals::check() const {
    sigset_t pending;
    sigemptyset(&pending);
    sigpending(&pending);
    for (const int signal : {SIGINT, SIGTERM, SIGHUP})
        if (sigismember(&pending, signal)) throw Error("interrupted");
}

}  // namespace heads
