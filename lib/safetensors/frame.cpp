#include "safetensors/frame.hpp"

#include "tensor/error.hpp"
#include "tensor/quote.hpp"

namespace heads {

void Frame::add(std::string name, Tensor tensor) {
    if (name == "__metadata__") throw Error("a tensor cannot be named __metadata__");
    if (index_.count(name)) throw Error("two tensors named {} in one frame", quote(name));
    index_.emplace(name, tensors_.size());
    tensors_.emplace_back(std::move(name), std::move(tensor));
}

const Tensor* Frame::find(std::string_view name) const {
    const auto found = index_.find(name);
    return found == index_.end() ? nullptr : &tensors_[found->second].second;
}

const Tensor& Frame::at(std::string_view name) const {
    if (const Tensor* tensor = find(name)) return *tensor;
    throw Error("no tensor {} in the frame", quote(name));
}

const std::string& Frame::meta(std::string_view key) const {
    const auto found = metadata.find(key);
    if (found == metadata.end()) throw Error("no {} in the frame's __metadata__", quote(key));
    return found->second;
}

}  // namespace heads
