// linear_attention_prefill_plan.cpp: see linear_attention_prefill_plan.h.
#include "linear_attention_prefill_plan.h"

#include <cuda_runtime.h>

#include <algorithm>
#include <atomic>

namespace based_core {
namespace cuda {
namespace {

/// SMs of the current device (132, an H100's, when it cannot be read); read once per process.
int sm_count() {
  static std::atomic<int> sms{0};
  int n = sms.load();
  if (n > 0) return n;
  int dev = 0;
  if (cudaGetDevice(&dev) != cudaSuccess || cudaDeviceGetAttribute(&n, cudaDevAttrMultiProcessorCount, dev) != cudaSuccess) {
    cudaGetLastError();
    n = 132;
  }
  sms.store(n);
  return n;
}

}  // namespace

SegmentPlan plan_segments(int64_t n_tokens, int chunk, int64_t rows, int ctas_per_sm, const void* workspace,
                          std::size_t workspace_bytes, std::size_t seg_row_bytes) {
  const int64_t chunks = (n_tokens + chunk - 1) / chunk;
  SegmentPlan plan;
  plan.seg_len = chunks * chunk;
  if (!workspace) return plan;
  const int64_t target = int64_t(sm_count()) * ctas_per_sm / rows;
  const int64_t by_len = chunks / 4;
  const int64_t by_ws = int64_t(workspace_bytes / seg_row_bytes);
  const int64_t ns = std::min({target, by_len, by_ws, int64_t(4096)});
  if (ns > 1) {
    const int64_t seg_chunks = (chunks + ns - 1) / ns;
    plan.n_seg = int((chunks + seg_chunks - 1) / seg_chunks);
    plan.seg_len = seg_chunks * chunk;
  }
  return plan;
}

void assign_units_greedy(const int* cost, int n_units, int* load, int n_warps, int max_warps, unsigned* units) {
  for (int w = 0; w < max_warps; ++w) units[w] = 0;
  bool done[32] = {};
  for (;;) {
    int best = -1;
    for (int u = 0; u < n_units; ++u)
      if (!done[u] && cost[u] > 0 && (best < 0 || cost[u] > cost[best])) best = u;
    if (best < 0) break;
    int wmin = 0;
    for (int w = 1; w < n_warps; ++w)
      if (load[w] < load[wmin]) wmin = w;
    units[wmin] |= 1u << best;
    load[wmin] += cost[best];
    done[best] = true;
  }
}

}  // namespace cuda
}  // namespace based_core
