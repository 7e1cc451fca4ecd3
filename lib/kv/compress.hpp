#pragma once
// compress-kv's one job, in the library: a KV frame through a policy, once,
// exactly as decode applies it when it goes on from that frame.

#include <cstdint>
#include <string>
#include <vector>

#include "kv/kv_frame.hpp"
#include "kv/policy.hpp"

namespace heads {

// What one layer kept (the report on stderr and in --report's TSV).
struct KvLayerReport {
    std::int64_t layer = 0, heads = 0;
    std::int64_t min_slots = 0, max_slots = 0;  // slots kept per head (synthetic ones included)
    double mean_slots = 0;
    std::int64_t bytes_before = 0, bytes_after = 0;  // the layer's tensor data in the frames
};

struct KvCompression {
    Frame frame;
    std::vector<KvLayerReport> layers;
};

// Applies `policy` to the frame's cache (contents, from kv_from_frame of
// `frame`). decode runs a frame's last token again (a frame keeps no
// logits), so the policy sees what decode's sees when it goes on from the
// frame: the positions before the last token, continuing at that token;
// the last token's slots stay in the frame as they are. A policy that keeps
// everything (full) gives the frame back unchanged.
KvCompression compress_kv_frame(const Frame& frame, KvFrameContents contents, KvPolicy& policy, const Rope& rope);

// "layer L: kept min/mean/max per head, bytes before -> after" lines and a total.
std::string format_kv_report(const std::vector<KvLayerReport>& layers);
// The same as TSV: a header line (when `header`), then a row per layer and one for the total (layer "all").
std::string kv_report_tsv(const std::vector<KvLayerReport>& layers, std::int64_t frame, bool header);

}  // namespace heads
