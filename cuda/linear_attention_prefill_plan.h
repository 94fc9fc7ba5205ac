// linear_attention_prefill_plan.h: host-side planning shared by the two tensor-core LA prefill
// paths (linear_attention_prefill_tc.cu, linear_attention_prefill_wg.cu): how many sequence
// segments to run in parallel, and which warp generates which feature units.
#pragma once

#include <cstddef>
#include <cstdint>

namespace based_core {
namespace cuda {

struct SegmentPlan {
  int n_seg = 1;        // segments per (sequence, head) row
  int64_t seg_len = 0;  // tokens per segment (a multiple of the chunk)
};

/// Enough CTAs to fill the GPU when there are few (sequence, head) rows, >= 4 chunks per
/// segment, no more segments than the workspace holds (seg_row_bytes: one segment's workspace
/// for all rows); one segment without a workspace.
SegmentPlan plan_segments(int64_t n_tokens, int chunk, int64_t rows, int ctas_per_sm, const void* workspace,
                          std::size_t workspace_bytes, std::size_t seg_row_bytes);

/// Greedy longest-first assignment of units (cost[u] > 0; 0 = skip) to the least loaded of the
/// first n_warps warps, starting from load[]; units[w] gets bit u. Clears units[0..max_warps).
void assign_units_greedy(const int* cost, int n_units, int* load, int n_warps, int max_warps, unsigned* units);

}  // namespace cuda
}  // namespace based_core
