#pragma once
// Threads that share the loops of a decode step (GEMV blocks, attention
// rows): items are taken one at a time from a shared counter, and run()
// returns as soon as every item is done. Unlike an OpenMP region, it never
// waits for a thread that has not started: a worker the OS has not scheduled
// (another process holds its core) takes no item, and the caller does the
// work. With OpenMP's barrier each of the ~40 regions of a step waited a
// scheduler time slice for such a thread, and decode of a small model beside
// one busy process took 66 s instead of 0.16 s (2 threads on 2 cores).
//
// Workers spin briefly after a loop (the next one usually follows within
// microseconds), then sleep until the next run().

#include <atomic>
#include <cstdint>
#include <functional>
#include <thread>
#include <vector>

namespace heads {

class WorkPool {
public:
    // `threads` counts the caller: threads - 1 workers are started. Throws
    // heads::Error (about "threads") when the system refuses one.
    explicit WorkPool(int threads);
    WorkPool(const WorkPool&) = delete;
    WorkPool& operator=(const WorkPool&) = delete;
    ~WorkPool();

    int threads() const { return int(workers_.size()) + 1; }

    // Calls body(item, thread) once for every item in [0, items), from any of
    // the threads; `thread` in [0, threads()) tells them apart (per-thread
    // scratch). Returns when all calls have returned. body must not throw.
    // Not reentrant: one run() at a time, from one thread.
    void run(std::int64_t items, const std::function<void(std::int64_t, int)>& body);

private:
    void stop();  // ends and joins the workers
    void work(int thread);
    void take_items(int thread);

    std::vector<std::thread> workers_;
    // The open loop: written by run() while no worker is inside (joined_ == 0).
    const std::function<void(std::int64_t, int)>* body_ = nullptr;
    std::int64_t items_ = 0;
    std::atomic<std::int64_t> next_{0}, done_{0};
    std::atomic<bool> open_{false}, stop_{false};
    std::atomic<int> joined_{0};
    std::atomic<std::uint64_t> generation_{0};
};

}  // namespace heads
