#include "ops/work_pool.hpp"

#include <immintrin.h>

#include <chrono>
#include <system_error>

#include "tensor/error.hpp"

namespace heads {
namespace {

// How long a worker spins for the next loop before it sleeps.
constexpr auto kSpin = std::chrono::microseconds(100);

// Spins until done(), giving the core away now and then: a thread we wait
// for may be waiting for this very core.
template <class Done> void spin_until(Done done) {
    for (int i = 1; !done(); ++i) {
        if (i % 256 == 0)
            std::this_thread::yield();
        else
            _mm_pause();
    }
}

}  // namespace

WorkPool::WorkPool(int threads) {
    try {
        for (int t = 0; t + 1 < threads; ++t) workers_.emplace_back([this, t] { work(t); });
    } catch (const std::system_error& error) {
        // A thread the system refused (a limit on processes or memory): the
        // ones started must be joined, or their destructors terminate.
        const std::size_t started = workers_.size() + 1;
        stop();
        throw Error(Param{"threads"}, "cannot start {} threads, only {}: {}", threads, started,
                    error.code().message());
    }
}

WorkPool::~WorkPool() { stop(); }

void WorkPool::stop() {
    stop_.store(true);
    generation_.fetch_add(1);
    generation_.notify_all();
    for (std::thread& worker : workers_) worker.join();
    workers_.clear();
}

void WorkPool::take_items(int thread) {
    for (std::int64_t item; (item = next_.fetch_add(1)) < items_;) {
        (*body_)(item, thread);
        done_.fetch_add(1, std::memory_order_release);
    }
}

// A worker joins a loop only while it is open, counted in joined_: run()
// closes the loop, then waits for joined_ to fall to 0, so that no worker
// touches a loop's state once run() has returned. All accesses to open_ and
// joined_ are sequentially consistent: either run() sees a worker's join, or
// the worker sees the loop closed.
void WorkPool::work(int thread) {
    std::uint64_t seen = 0;
    for (;;) {
        const auto deadline = std::chrono::steady_clock::now() + kSpin;
        for (int i = 0; generation_.load(std::memory_order_acquire) == seen; ++i) {
            if (i % 64 == 63 && std::chrono::steady_clock::now() > deadline) {
                generation_.wait(seen);
                break;
            }
            _mm_pause();
        }
        if (stop_.load()) return;
        seen = generation_.load();
        joined_.fetch_add(1);
        if (open_.load()) take_items(thread);
        joined_.fetch_sub(1);
    }
}

void WorkPool::run(std::int64_t items, const std::function<void(std::int64_t, int)>& body) {
    const int caller = threads() - 1;
    if (workers_.empty() || items <= 1) {
        for (std::int64_t item = 0; item < items; ++item) body(item, caller);
        return;
    }
    body_ = &body;
    items_ = items;
    next_.store(0);
    done_.store(0);
    open_.store(true);
    generation_.fetch_add(1);
    generation_.notify_all();
    take_items(caller);
    // Items still running on workers; a worker that has not started holds none.
    spin_until([&] { return done_.load(std::memory_order_acquire) == items; });
    open_.store(false);
    spin_until([&] { return joined_.load() == 0; });
}

}  // namespace heads
