// sampling.cu: temperature / top-k / top-p sampling on the device, one CTA per
// row, with the same thresholds, random numbers and walk order as the host
// routine (cpp/src/sampler.cpp), so CPU and GPU draw the same tokens.
#include <cub/block/block_reduce.cuh>
#include <cub/block/block_scan.cuh>

#include <climits>

#include "common.cuh"
#include "kernels.h"
#include "sampling_math.h"

namespace based_core {
namespace cuda {
namespace {

constexpr int kThreads = 512;

// Reduction functors (cub::Max / cub::Min left CUB in CCCL 3).
struct MaxOp {
  template <typename T>
  __device__ __forceinline__ T operator()(const T& a, const T& b) const { return a > b ? a : b; }
};
struct MinOp {
  template <typename T>
  __device__ __forceinline__ T operator()(const T& a, const T& b) const { return a < b ? a : b; }
};

__device__ __forceinline__ float key_to_float(uint32_t k) {
  uint32_t u = (k & 0x80000000u) ? (k & 0x7fffffffu) : ~k;
  return __uint_as_float(u);
}

__device__ __forceinline__ double weight(float x, double m, double inv_t) { return exp((double(x) - m) * inv_t); }

// computes: ops::SampleParams for row blockIdx.x: thresholds on order keys found by a
// bitwise search (top-k: count of keys >= t; top-p: probability mass of keys >= t), then
// the kept tokens walked in id order until the running mass passes u * kept mass.
__global__ void __launch_bounds__(kThreads) sample_kernel(ops::SampleParams p) {
  using ReduceU = cub::BlockReduce<uint32_t, kThreads>;
  using ReduceD = cub::BlockReduce<double, kThreads>;
  using ScanD = cub::BlockScan<double, kThreads>;
  using ReduceI = cub::BlockReduce<int, kThreads>;
  __shared__ union {
    typename ReduceU::TempStorage u;
    typename ReduceD::TempStorage d;
    typename ScanD::TempStorage s;
    typename ReduceI::TempStorage i;
  } tmp;
  __shared__ uint32_t s_key;
  __shared__ double s_val;
  __shared__ int s_idx;

  const int64_t row = blockIdx.x;
  const float* x = p.logits + row * (p.ld ? p.ld : p.vocab);  // (row_stride() is host-only)
  const int n = int(p.vocab);
  const int tid = threadIdx.x;

  auto all_max_key = [&](uint32_t v) {
    v = ReduceU(tmp.u).Reduce(v, MaxOp());
    if (tid == 0) s_key = v;
    __syncthreads();
    v = s_key;
    __syncthreads();
    return v;
  };
  auto all_sum = [&](double v) {
    v = ReduceD(tmp.d).Sum(v);
    if (tid == 0) s_val = v;
    __syncthreads();
    v = s_val;
    __syncthreads();
    return v;
  };

  uint32_t kmax = 0;
  for (int j = tid; j < n; j += kThreads) kmax = max(kmax, float_order_key(x[j]));
  kmax = all_max_key(kmax);
  if (kmax == 0) {  // every logit is NaN
    if (tid == 0) p.out[row] = 0;
    return;
  }
  const double m = key_to_float(kmax);
  const double inv_t = 1.0 / double(p.temperature);

  uint32_t t_k = 1;
  if (p.top_k > 0 && p.top_k < n) {
    uint32_t ans = 0;
    for (int bit = 31; bit >= 0; --bit) {
      const uint32_t cand = ans | (1u << bit);
      double cnt = 0;
      for (int j = tid; j < n; j += kThreads) cnt += float_order_key(x[j]) >= cand;
      if (all_sum(cnt) >= double(p.top_k)) ans = cand;
    }
    t_k = max(ans, 1u);
  }
  double Z = 0;
  for (int j = tid; j < n; j += kThreads)
    if (float_order_key(x[j]) >= t_k) Z += weight(x[j], m, inv_t);
  Z = all_sum(Z);

  uint32_t t = t_k;
  if (p.top_p < 1.f) {
    const double target = double(p.top_p) * Z;
    uint32_t ans = 0;
    for (int bit = 31; bit >= 0; --bit) {
      const uint32_t cand = max(ans | (1u << bit), t_k);
      double mass = 0;
      for (int j = tid; j < n; j += kThreads)
        if (float_order_key(x[j]) >= cand) mass += weight(x[j], m, inv_t);
      if (all_sum(mass) >= target) ans = ans | (1u << bit);
    }
    t = max(ans, t_k);
  }
  double Zs = 0;
  for (int j = tid; j < n; j += kThreads)
    if (float_order_key(x[j]) >= t) Zs += weight(x[j], m, inv_t);
  Zs = all_sum(Zs);

  const double r = sample_uniform(p.seed, uint32_t(p.seqs[row]), uint32_t(p.steps[row])) * Zs;
  double carry = 0;
  int last = -1;
  for (int base = 0; base < n; base += kThreads) {
    const int j = base + tid;
    const bool kept = j < n && float_order_key(x[j]) >= t;
    const double w = kept ? weight(x[j], m, inv_t) : 0.0;
    double incl, total;
    ScanD(tmp.s).InclusiveSum(w, incl, total);
    __syncthreads();
    const int hit = (kept && carry + incl > r) ? j : INT_MAX;
    const int first = ReduceI(tmp.i).Reduce(hit, MinOp());
    __syncthreads();  // the two reductions share temp storage
    const int lastk = ReduceI(tmp.i).Reduce(kept ? j : -1, MaxOp());
    if (tid == 0) s_idx = first, s_key = uint32_t(lastk + 1);
    __syncthreads();
    if (int(s_key) - 1 >= 0) last = int(s_key) - 1;
    if (s_idx != INT_MAX) {
      if (tid == 0) p.out[row] = s_idx;
      return;
    }
    carry += total;
    __syncthreads();
  }
  if (tid == 0) p.out[row] = last < 0 ? 0 : last;  // rounding left r at the very end
}

}  // namespace

cudaError_t launch_sample(const ops::SampleParams& p, cudaStream_t stream) {
  if (p.rows <= 0) return cudaSuccess;
  if (p.vocab <= 0 || p.vocab > INT_MAX - kThreads) return cudaErrorInvalidValue;
  sample_kernel<<<unsigned(p.rows), kThreads, 0, stream>>>(p);
  return cudaGetLastError();
}

}  // namespace cuda
}  // namespace based_core
