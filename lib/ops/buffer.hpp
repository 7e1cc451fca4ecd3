#pragma once
// Scratch memory that grows and never shrinks: a forward pass asks for the
// size it needs, and after the first (largest) call no step allocates again.
// Not zero-filled on purpose: fresh pages are only touched when used, which
// keeps start-up fast for large contexts.

#include <algorithm>
#include <cstddef>
#include <cstdlib>
#include <memory>
#include <new>

namespace heads {

template <class T> class Buffer {
public:
    Buffer() = default;
    explicit Buffer(std::size_t count) { reserve(count); }

    // Makes room for `count` elements; contents are kept only if no growth happens.
    T* reserve(std::size_t count) {
        if (count > capacity_) {
            const std::size_t bytes = (count * sizeof(T) + 63) / 64 * 64;
            void* memory = std::aligned_alloc(64, bytes);
            if (!memory) throw std::bad_alloc();
            data_.reset(static_cast<T*>(memory));
            capacity_ = count;
        }
        return data_.get();
    }
    // Grows to `count` elements keeping the first `keep` ones.
    T* grow_keep(std::size_t count, std::size_t keep) {
        if (count <= capacity_) return data_.get();
        Buffer bigger(count);
        if (keep) std::copy(data_.get(), data_.get() + keep, bigger.data_.get());
        *this = std::move(bigger);
        return data_.get();
    }

    T* data() { return data_.get(); }
    const T* data() const { return data_.get(); }
    std::size_t capacity() const { return capacity_; }

private:
    struct Free {
        void operator()(T* p) const { std::free(p); }
    };
    std::unique_ptr<T, Free> data_;
    std::size_t capacity_ = 0;
};

}  // namespace heads
