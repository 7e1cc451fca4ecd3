#pragma once
// A frame is one safetensors blob: named tensors in order, plus the string
// metadata of `__metadata__`. A stream is frames back to back.

#include <cstddef>
#include <map>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "tensor/tensor.hpp"

namespace heads {

using Metadata = std::map<std::string, std::string, std::less<>>;

class Frame {
public:
    Metadata metadata;

    // Appends a tensor; its data will follow the previous ones in the file.
    // Throws heads::Error on a duplicate name or the reserved "__metadata__".
    void add(std::string name, Tensor tensor);

    const Tensor* find(std::string_view name) const;  // nullptr when absent
    const Tensor& at(std::string_view name) const;    // throws heads::Error when absent
    // A metadata value; throws heads::Error when the key is absent.
    const std::string& meta(std::string_view key) const;

    std::size_t size() const { return tensors_.size(); }
    bool empty() const { return tensors_.empty(); }
    // (name, tensor) pairs in data order.
    auto begin() const { return tensors_.begin(); }
    auto end() const { return tensors_.end(); }

private:
    std::vector<std::pair<std::string, Tensor>> tensors_;
    std::map<std::string, std::size_t, std::less<>> index_;
};

}  // namespace heads
