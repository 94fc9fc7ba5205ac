// linear_attention_prefill_wg.cuh: building blocks of the Hopper (sm_90a) LA prefill kernel
// (linear_attention_prefill_wg.cu, which explains the algorithm): shared-memory layout, kernel
// arguments, wgmma descriptors and instruction wrappers, stmatrix, proxy fences, and the 16-bit
// pair arithmetic (bf16x2 / half2) of the feature maps. Included by that one file.
//
// Every tensor-core operand in shared memory uses the canonical no-swizzle layout of wgmma: 8x8
// "core matrices" of 16-bit values, each 8 rows of 16 contiguous bytes (128 bytes). An M/N x K
// operand that is K-major (K contiguous inside a core-matrix row) keeps element (n, k) at
//   (n / 8) * SBO + (k / 8) * LBO + (n % 8) * 16 + (k % 8) * 2 bytes,
// an MN-major one keeps (k, n) at (n / 8) * SBO + (k / 8) * LBO + (k % 8) * 16 + (n % 8) * 2:
// LBO steps along K, SBO along M/N (PTX ISA, "matrix descriptor"; CUTLASS's INTERLEAVE layouts).
#pragma once

#include <cstdint>

#include "linear_attention_prefill_tc.cuh"

#if defined(__CUDA_ARCH__) && defined(__CUDA_ARCH_FEAT_SM90_ALL)
#define LAWG_HAS_WGMMA 1
#else
#define LAWG_HAS_WGMMA 0
#endif

namespace based_core {
namespace cuda {
namespace lawg {

using namespace lasym;
using latc::cp_async_wait_all;
using latc::ldsm2;
using latc::load_row16;
using latc::min64;
using latc::sigma;
using latc::ChunkArgs;  // the same arguments, workspace fragment layout and scan as the mma.sync kernel
using latc::kFragFloats;
using latc::kMaxWarps;
using latc::ws_row_floats;

constexpr int kC = 64;             // tokens per chunk
constexpr int kNR = 72;            // readout N per warpgroup: 8 denominator columns + 64 value columns
constexpr int kLdKT = 72;          // k^T row stride (elements): 144 bytes, conflict-free 16-byte rows
constexpr int kLdStage = 72;       // output staging row stride (elements)
// generation units: 0..1 phi_q token halves, 2..9 phi_k token octets, 10 the Gram / z unit
constexpr int kUnitQ = 0, kUnitK = 2, kUnitGram = 10, kUnits = 11;


// byte strides of the core-matrix layouts
constexpr int kSboQ = 20 * 128;  // phi_q [64 tokens][160 features], K-major (SBO between token groups)
constexpr int kSboS = 20 * 128;  // S_ext [72 per warpgroup][160 features], K-major
constexpr int kSboV = 8 * 128;   // V_ext [64 tokens][72 per warpgroup], MN-major (SBO between column groups)
constexpr int kSboK = 8 * 128;   // phi_k [160 features][64 tokens], K-major (SBO between feature groups)

/// Shared-memory layout (byte offsets) for NWG warpgroups.
struct Layout {
  int phq, sext, vext, phk_hi, phk_lo, qraw, kraw, kt, z, tab, rows, stage, total;
  int vext_bytes;  // one V_ext buffer
};
__host__ __device__ constexpr Layout make_layout(int nwg) {
  Layout L{};
  int o = 0;
  L.phq = o, o += 64 / 8 * kSboQ;                 // 20480
  L.sext = o, o += nwg * (kNR / 8) * kSboS;       // 23040 per warpgroup
  L.vext_bytes = nwg * (kNR / 8) * kSboV;         // 9216 per warpgroup
  L.vext = o, o += 2 * L.vext_bytes;              // double buffered
  L.phk_hi = o, o += kFeat / 8 * kSboK;           // 20480
  L.phk_lo = o, o += kPairs / 8 * kSboK;          // 17408
  L.qraw = o, o += kC * 16 * 2;                   // raw q [64][16] (16-byte halves swizzled)
  L.kraw = o, o += kC * 16 * 2;                   // raw k [64][16]
  L.kt = o, o += 24 * kLdKT * 2;                  // k^T [24][72]: rows 0..15 k, 16 valid mask, 17..23 zero
  L.z = o, o += 2 * kFeat * 4;                    // [2][160] fp32: z before / after the chunk
  L.tab = o, o += kFeat * 4;                      // [160] int: pair feature r = (i, j)
  L.rows = o, o += kFeat * 16;                    // [160] int4: state rows of feature r (load/store)
  L.stage = nwg == 1 ? L.phq : o;                 // output staging: 16 x 72 per warp
  if (nwg > 1) o += 4 * nwg * 16 * kLdStage * 2;
  L.total = o;
  return L;
}
static_assert(make_layout(1).total <= 113 * 1024, "two CTAs per SM at head_dim 64");
static_assert(make_layout(2).total <= 227 * 1024, "one CTA per SM at head_dim 128");


// ---- PTX wrappers ----
/// wgmma shared-memory matrix descriptor, no swizzle (layout type 0).
__device__ __forceinline__ uint64_t make_desc(const void* p, uint32_t lbo, uint32_t sbo) {
  return uint64_t((saddr(p) & 0x3FFFFu) >> 4) | (uint64_t(lbo >> 4) << 16) | (uint64_t(sbo >> 4) << 32);
}
__device__ __forceinline__ void wgmma_fence() {
#if LAWG_HAS_WGMMA
  asm volatile("wgmma.fence.sync.aligned;\n" ::: "memory");
#endif
}
__device__ __forceinline__ void wgmma_commit() {
#if LAWG_HAS_WGMMA
  asm volatile("wgmma.commit_group.sync.aligned;\n" ::: "memory");
#endif
}
__device__ __forceinline__ void wgmma_wait_all() {
#if LAWG_HAS_WGMMA
  asm volatile("wgmma.wait_group.sync.aligned 0;\n" ::: "memory");
#endif
}
/// Keeps the compiler from moving accesses of r across the wgmma fence / wait around it.
__device__ __forceinline__ void reg_fence(float& r) { asm volatile("" : "+f"(r)::"memory"); }
__device__ __forceinline__ void reg_fence(uint32_t& r) { asm volatile("" : "+r"(r)::"memory"); }
/// Orders this thread's generic-proxy shared-memory writes before later async-proxy (wgmma) reads.
__device__ __forceinline__ void fence_proxy_async() {
#if LAWG_HAS_WGMMA
  asm volatile("fence.proxy.async.shared::cta;\n" ::: "memory");
#endif
}
/// Barrier among the 128 threads of warpgroup wg (ids 1, 2; 0 is __syncthreads).
__device__ __forceinline__ void wg_barrier(int wg) {
  asm volatile("bar.sync %0, 128;\n" ::"r"(wg + 1) : "memory");
}
__device__ __forceinline__ void stsm4(void* p, uint32_t r0, uint32_t r1, uint32_t r2, uint32_t r3) {
#if LAWG_HAS_WGMMA
  asm volatile("stmatrix.sync.aligned.m8n8.x4.shared.b16 [%0], {%1,%2,%3,%4};\n" ::"r"(saddr(p)), "r"(r0), "r"(r1),
               "r"(r2), "r"(r3)
               : "memory");
#endif
}
__device__ __forceinline__ uint4 lds128(const void* p) { return *reinterpret_cast<const uint4*>(p); }
__device__ __forceinline__ void sts128(void* p, uint4 x) { *reinterpret_cast<uint4*>(p) = x; }

// ---- 16-bit pair arithmetic (T = __nv_bfloat16 / __half) ----
template <class T> struct Pair;
template <> struct Pair<__nv_bfloat16> {
  using T2 = __nv_bfloat162;
  static __device__ __forceinline__ T2 mul(T2 a, T2 b) { return __hmul2(a, b); }
  /// a * b - c, rounded once
  static __device__ __forceinline__ T2 fms(T2 a, T2 b, T2 c) { return __hfma2(a, b, __hneg2(c)); }
  static __device__ __forceinline__ T2 make(__nv_bfloat16 x, __nv_bfloat16 y) { return __halves2bfloat162(x, y); }
  static __device__ __forceinline__ __nv_bfloat16 lo(T2 v) { return __low2bfloat16(v); }
  static __device__ __forceinline__ __nv_bfloat16 hi(T2 v) { return __high2bfloat16(v); }
  static __device__ __forceinline__ T2 splat(float x) { return __float2bfloat162_rn(x); }
  static constexpr uint32_t kOne = 0x3F80u;
};
template <> struct Pair<__half> {
  using T2 = __half2;
  static __device__ __forceinline__ T2 mul(T2 a, T2 b) { return __hmul2(a, b); }
  static __device__ __forceinline__ T2 fms(T2 a, T2 b, T2 c) { return __hfma2(a, b, __hneg2(c)); }
  static __device__ __forceinline__ T2 make(__half x, __half y) { return __halves2half2(x, y); }
  static __device__ __forceinline__ __half lo(T2 v) { return __low2half(v); }
  static __device__ __forceinline__ __half hi(T2 v) { return __high2half(v); }
  static __device__ __forceinline__ T2 splat(float x) { return __float2half2_rn(x); }
  static constexpr uint32_t kOne = 0x3C00u;
};
template <class T2> __device__ __forceinline__ uint32_t bits(T2 v) { return *reinterpret_cast<const uint32_t*>(&v); }
template <class T2> __device__ __forceinline__ T2 from_bits(uint32_t u) { return *reinterpret_cast<const T2*>(&u); }

// ---- wgmma instructions (generated: m64nNk16, fp32 accumulators; SS = both operands from shared
// memory, RS = A from registers; _tb = B MN-major (transposed); scale_d 0: D = A B, 1: D += A B) ----
__device__ __forceinline__ void wgmma_ss_n72_bf16(float (&d)[36], uint64_t da, uint64_t db, int scale_d) {
#if LAWG_HAS_WGMMA
  asm volatile(
      "{\n.reg .pred p;\nsetp.ne.b32 p, %38, 0;\n"
      "wgmma.mma_async.sync.aligned.m64n72k16.f32.bf16.bf16 {%0,%1,%2,%3,%4,%5,%6,%7,%8,%9,%10,%11,%12,%13,%14,%15,%16,%17,%18,%19,%20,%21,%22,%23,%24,%25,%26,%27,%28,%29,%30,%31,%32,%33,%34,%35}, %36, %37, p, 1, 1, 0, 0;\n}\n"
      : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]), "+f"(d[4]), "+f"(d[5]), "+f"(d[6]), "+f"(d[7]), "+f"(d[8]), "+f"(d[9]), "+f"(d[10]), "+f"(d[11]), "+f"(d[12]), "+f"(d[13]), "+f"(d[14]), "+f"(d[15]), "+f"(d[16]), "+f"(d[17]), "+f"(d[18]), "+f"(d[19]), "+f"(d[20]), "+f"(d[21]), "+f"(d[22]), "+f"(d[23]), "+f"(d[24]), "+f"(d[25]), "+f"(d[26]), "+f"(d[27]), "+f"(d[28]), "+f"(d[29]), "+f"(d[30]), "+f"(d[31]), "+f"(d[32]), "+f"(d[33]), "+f"(d[34]), "+f"(d[35])
      : "l"(da), "l"(db), "r"(scale_d));
#endif
}

__device__ __forceinline__ void wgmma_rs_n72_tb_bf16(float (&d)[36], const uint32_t (&a)[4], uint64_t db, int scale_d) {
#if LAWG_HAS_WGMMA
  asm volatile(
      "{\n.reg .pred p;\nsetp.ne.b32 p, %41, 0;\n"
      "wgmma.mma_async.sync.aligned.m64n72k16.f32.bf16.bf16 {%0,%1,%2,%3,%4,%5,%6,%7,%8,%9,%10,%11,%12,%13,%14,%15,%16,%17,%18,%19,%20,%21,%22,%23,%24,%25,%26,%27,%28,%29,%30,%31,%32,%33,%34,%35}, {%36, %37, %38, %39}, %40, p, 1, 1, 1;\n}\n"
      : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]), "+f"(d[4]), "+f"(d[5]), "+f"(d[6]), "+f"(d[7]), "+f"(d[8]), "+f"(d[9]), "+f"(d[10]), "+f"(d[11]), "+f"(d[12]), "+f"(d[13]), "+f"(d[14]), "+f"(d[15]), "+f"(d[16]), "+f"(d[17]), "+f"(d[18]), "+f"(d[19]), "+f"(d[20]), "+f"(d[21]), "+f"(d[22]), "+f"(d[23]), "+f"(d[24]), "+f"(d[25]), "+f"(d[26]), "+f"(d[27]), "+f"(d[28]), "+f"(d[29]), "+f"(d[30]), "+f"(d[31]), "+f"(d[32]), "+f"(d[33]), "+f"(d[34]), "+f"(d[35])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "l"(db), "r"(scale_d));
#endif
}

__device__ __forceinline__ void wgmma_rs_n160_bf16(float (&d)[80], const uint32_t (&a)[4], uint64_t db, int scale_d) {
#if LAWG_HAS_WGMMA
  asm volatile(
      "{\n.reg .pred p;\nsetp.ne.b32 p, %85, 0;\n"
      "wgmma.mma_async.sync.aligned.m64n160k16.f32.bf16.bf16 {%0,%1,%2,%3,%4,%5,%6,%7,%8,%9,%10,%11,%12,%13,%14,%15,%16,%17,%18,%19,%20,%21,%22,%23,%24,%25,%26,%27,%28,%29,%30,%31,%32,%33,%34,%35,%36,%37,%38,%39,%40,%41,%42,%43,%44,%45,%46,%47,%48,%49,%50,%51,%52,%53,%54,%55,%56,%57,%58,%59,%60,%61,%62,%63,%64,%65,%66,%67,%68,%69,%70,%71,%72,%73,%74,%75,%76,%77,%78,%79}, {%80, %81, %82, %83}, %84, p, 1, 1, 0;\n}\n"
      : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]), "+f"(d[4]), "+f"(d[5]), "+f"(d[6]), "+f"(d[7]), "+f"(d[8]), "+f"(d[9]), "+f"(d[10]), "+f"(d[11]), "+f"(d[12]), "+f"(d[13]), "+f"(d[14]), "+f"(d[15]), "+f"(d[16]), "+f"(d[17]), "+f"(d[18]), "+f"(d[19]), "+f"(d[20]), "+f"(d[21]), "+f"(d[22]), "+f"(d[23]), "+f"(d[24]), "+f"(d[25]), "+f"(d[26]), "+f"(d[27]), "+f"(d[28]), "+f"(d[29]), "+f"(d[30]), "+f"(d[31]), "+f"(d[32]), "+f"(d[33]), "+f"(d[34]), "+f"(d[35]), "+f"(d[36]), "+f"(d[37]), "+f"(d[38]), "+f"(d[39]), "+f"(d[40]), "+f"(d[41]), "+f"(d[42]), "+f"(d[43]), "+f"(d[44]), "+f"(d[45]), "+f"(d[46]), "+f"(d[47]), "+f"(d[48]), "+f"(d[49]), "+f"(d[50]), "+f"(d[51]), "+f"(d[52]), "+f"(d[53]), "+f"(d[54]), "+f"(d[55]), "+f"(d[56]), "+f"(d[57]), "+f"(d[58]), "+f"(d[59]), "+f"(d[60]), "+f"(d[61]), "+f"(d[62]), "+f"(d[63]), "+f"(d[64]), "+f"(d[65]), "+f"(d[66]), "+f"(d[67]), "+f"(d[68]), "+f"(d[69]), "+f"(d[70]), "+f"(d[71]), "+f"(d[72]), "+f"(d[73]), "+f"(d[74]), "+f"(d[75]), "+f"(d[76]), "+f"(d[77]), "+f"(d[78]), "+f"(d[79])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "l"(db), "r"(scale_d));
#endif
}

__device__ __forceinline__ void wgmma_rs_n136_bf16(float (&d)[80], const uint32_t (&a)[4], uint64_t db, int scale_d) {
#if LAWG_HAS_WGMMA
  asm volatile(
      "{\n.reg .pred p;\nsetp.ne.b32 p, %73, 0;\n"
      "wgmma.mma_async.sync.aligned.m64n136k16.f32.bf16.bf16 {%0,%1,%2,%3,%4,%5,%6,%7,%8,%9,%10,%11,%12,%13,%14,%15,%16,%17,%18,%19,%20,%21,%22,%23,%24,%25,%26,%27,%28,%29,%30,%31,%32,%33,%34,%35,%36,%37,%38,%39,%40,%41,%42,%43,%44,%45,%46,%47,%48,%49,%50,%51,%52,%53,%54,%55,%56,%57,%58,%59,%60,%61,%62,%63,%64,%65,%66,%67}, {%68, %69, %70, %71}, %72, p, 1, 1, 0;\n}\n"
      : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]), "+f"(d[4]), "+f"(d[5]), "+f"(d[6]), "+f"(d[7]), "+f"(d[8]), "+f"(d[9]), "+f"(d[10]), "+f"(d[11]), "+f"(d[12]), "+f"(d[13]), "+f"(d[14]), "+f"(d[15]), "+f"(d[16]), "+f"(d[17]), "+f"(d[18]), "+f"(d[19]), "+f"(d[20]), "+f"(d[21]), "+f"(d[22]), "+f"(d[23]), "+f"(d[24]), "+f"(d[25]), "+f"(d[26]), "+f"(d[27]), "+f"(d[28]), "+f"(d[29]), "+f"(d[30]), "+f"(d[31]), "+f"(d[32]), "+f"(d[33]), "+f"(d[34]), "+f"(d[35]), "+f"(d[36]), "+f"(d[37]), "+f"(d[38]), "+f"(d[39]), "+f"(d[40]), "+f"(d[41]), "+f"(d[42]), "+f"(d[43]), "+f"(d[44]), "+f"(d[45]), "+f"(d[46]), "+f"(d[47]), "+f"(d[48]), "+f"(d[49]), "+f"(d[50]), "+f"(d[51]), "+f"(d[52]), "+f"(d[53]), "+f"(d[54]), "+f"(d[55]), "+f"(d[56]), "+f"(d[57]), "+f"(d[58]), "+f"(d[59]), "+f"(d[60]), "+f"(d[61]), "+f"(d[62]), "+f"(d[63]), "+f"(d[64]), "+f"(d[65]), "+f"(d[66]), "+f"(d[67])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "l"(db), "r"(scale_d));
#endif
}

__device__ __forceinline__ void wgmma_ss_n72_f16(float (&d)[36], uint64_t da, uint64_t db, int scale_d) {
#if LAWG_HAS_WGMMA
  asm volatile(
      "{\n.reg .pred p;\nsetp.ne.b32 p, %38, 0;\n"
      "wgmma.mma_async.sync.aligned.m64n72k16.f32.f16.f16 {%0,%1,%2,%3,%4,%5,%6,%7,%8,%9,%10,%11,%12,%13,%14,%15,%16,%17,%18,%19,%20,%21,%22,%23,%24,%25,%26,%27,%28,%29,%30,%31,%32,%33,%34,%35}, %36, %37, p, 1, 1, 0, 0;\n}\n"
      : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]), "+f"(d[4]), "+f"(d[5]), "+f"(d[6]), "+f"(d[7]), "+f"(d[8]), "+f"(d[9]), "+f"(d[10]), "+f"(d[11]), "+f"(d[12]), "+f"(d[13]), "+f"(d[14]), "+f"(d[15]), "+f"(d[16]), "+f"(d[17]), "+f"(d[18]), "+f"(d[19]), "+f"(d[20]), "+f"(d[21]), "+f"(d[22]), "+f"(d[23]), "+f"(d[24]), "+f"(d[25]), "+f"(d[26]), "+f"(d[27]), "+f"(d[28]), "+f"(d[29]), "+f"(d[30]), "+f"(d[31]), "+f"(d[32]), "+f"(d[33]), "+f"(d[34]), "+f"(d[35])
      : "l"(da), "l"(db), "r"(scale_d));
#endif
}

__device__ __forceinline__ void wgmma_rs_n72_tb_f16(float (&d)[36], const uint32_t (&a)[4], uint64_t db, int scale_d) {
#if LAWG_HAS_WGMMA
  asm volatile(
      "{\n.reg .pred p;\nsetp.ne.b32 p, %41, 0;\n"
      "wgmma.mma_async.sync.aligned.m64n72k16.f32.f16.f16 {%0,%1,%2,%3,%4,%5,%6,%7,%8,%9,%10,%11,%12,%13,%14,%15,%16,%17,%18,%19,%20,%21,%22,%23,%24,%25,%26,%27,%28,%29,%30,%31,%32,%33,%34,%35}, {%36, %37, %38, %39}, %40, p, 1, 1, 1;\n}\n"
      : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]), "+f"(d[4]), "+f"(d[5]), "+f"(d[6]), "+f"(d[7]), "+f"(d[8]), "+f"(d[9]), "+f"(d[10]), "+f"(d[11]), "+f"(d[12]), "+f"(d[13]), "+f"(d[14]), "+f"(d[15]), "+f"(d[16]), "+f"(d[17]), "+f"(d[18]), "+f"(d[19]), "+f"(d[20]), "+f"(d[21]), "+f"(d[22]), "+f"(d[23]), "+f"(d[24]), "+f"(d[25]), "+f"(d[26]), "+f"(d[27]), "+f"(d[28]), "+f"(d[29]), "+f"(d[30]), "+f"(d[31]), "+f"(d[32]), "+f"(d[33]), "+f"(d[34]), "+f"(d[35])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "l"(db), "r"(scale_d));
#endif
}

__device__ __forceinline__ void wgmma_rs_n160_f16(float (&d)[80], const uint32_t (&a)[4], uint64_t db, int scale_d) {
#if LAWG_HAS_WGMMA
  asm volatile(
      "{\n.reg .pred p;\nsetp.ne.b32 p, %85, 0;\n"
      "wgmma.mma_async.sync.aligned.m64n160k16.f32.f16.f16 {%0,%1,%2,%3,%4,%5,%6,%7,%8,%9,%10,%11,%12,%13,%14,%15,%16,%17,%18,%19,%20,%21,%22,%23,%24,%25,%26,%27,%28,%29,%30,%31,%32,%33,%34,%35,%36,%37,%38,%39,%40,%41,%42,%43,%44,%45,%46,%47,%48,%49,%50,%51,%52,%53,%54,%55,%56,%57,%58,%59,%60,%61,%62,%63,%64,%65,%66,%67,%68,%69,%70,%71,%72,%73,%74,%75,%76,%77,%78,%79}, {%80, %81, %82, %83}, %84, p, 1, 1, 0;\n}\n"
      : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]), "+f"(d[4]), "+f"(d[5]), "+f"(d[6]), "+f"(d[7]), "+f"(d[8]), "+f"(d[9]), "+f"(d[10]), "+f"(d[11]), "+f"(d[12]), "+f"(d[13]), "+f"(d[14]), "+f"(d[15]), "+f"(d[16]), "+f"(d[17]), "+f"(d[18]), "+f"(d[19]), "+f"(d[20]), "+f"(d[21]), "+f"(d[22]), "+f"(d[23]), "+f"(d[24]), "+f"(d[25]), "+f"(d[26]), "+f"(d[27]), "+f"(d[28]), "+f"(d[29]), "+f"(d[30]), "+f"(d[31]), "+f"(d[32]), "+f"(d[33]), "+f"(d[34]), "+f"(d[35]), "+f"(d[36]), "+f"(d[37]), "+f"(d[38]), "+f"(d[39]), "+f"(d[40]), "+f"(d[41]), "+f"(d[42]), "+f"(d[43]), "+f"(d[44]), "+f"(d[45]), "+f"(d[46]), "+f"(d[47]), "+f"(d[48]), "+f"(d[49]), "+f"(d[50]), "+f"(d[51]), "+f"(d[52]), "+f"(d[53]), "+f"(d[54]), "+f"(d[55]), "+f"(d[56]), "+f"(d[57]), "+f"(d[58]), "+f"(d[59]), "+f"(d[60]), "+f"(d[61]), "+f"(d[62]), "+f"(d[63]), "+f"(d[64]), "+f"(d[65]), "+f"(d[66]), "+f"(d[67]), "+f"(d[68]), "+f"(d[69]), "+f"(d[70]), "+f"(d[71]), "+f"(d[72]), "+f"(d[73]), "+f"(d[74]), "+f"(d[75]), "+f"(d[76]), "+f"(d[77]), "+f"(d[78]), "+f"(d[79])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "l"(db), "r"(scale_d));
#endif
}

__device__ __forceinline__ void wgmma_rs_n136_f16(float (&d)[80], const uint32_t (&a)[4], uint64_t db, int scale_d) {
#if LAWG_HAS_WGMMA
  asm volatile(
      "{\n.reg .pred p;\nsetp.ne.b32 p, %73, 0;\n"
      "wgmma.mma_async.sync.aligned.m64n136k16.f32.f16.f16 {%0,%1,%2,%3,%4,%5,%6,%7,%8,%9,%10,%11,%12,%13,%14,%15,%16,%17,%18,%19,%20,%21,%22,%23,%24,%25,%26,%27,%28,%29,%30,%31,%32,%33,%34,%35,%36,%37,%38,%39,%40,%41,%42,%43,%44,%45,%46,%47,%48,%49,%50,%51,%52,%53,%54,%55,%56,%57,%58,%59,%60,%61,%62,%63,%64,%65,%66,%67}, {%68, %69, %70, %71}, %72, p, 1, 1, 0;\n}\n"
      : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]), "+f"(d[4]), "+f"(d[5]), "+f"(d[6]), "+f"(d[7]), "+f"(d[8]), "+f"(d[9]), "+f"(d[10]), "+f"(d[11]), "+f"(d[12]), "+f"(d[13]), "+f"(d[14]), "+f"(d[15]), "+f"(d[16]), "+f"(d[17]), "+f"(d[18]), "+f"(d[19]), "+f"(d[20]), "+f"(d[21]), "+f"(d[22]), "+f"(d[23]), "+f"(d[24]), "+f"(d[25]), "+f"(d[26]), "+f"(d[27]), "+f"(d[28]), "+f"(d[29]), "+f"(d[30]), "+f"(d[31]), "+f"(d[32]), "+f"(d[33]), "+f"(d[34]), "+f"(d[35]), "+f"(d[36]), "+f"(d[37]), "+f"(d[38]), "+f"(d[39]), "+f"(d[40]), "+f"(d[41]), "+f"(d[42]), "+f"(d[43]), "+f"(d[44]), "+f"(d[45]), "+f"(d[46]), "+f"(d[47]), "+f"(d[48]), "+f"(d[49]), "+f"(d[50]), "+f"(d[51]), "+f"(d[52]), "+f"(d[53]), "+f"(d[54]), "+f"(d[55]), "+f"(d[56]), "+f"(d[57]), "+f"(d[58]), "+f"(d[59]), "+f"(d[60]), "+f"(d[61]), "+f"(d[62]), "+f"(d[63]), "+f"(d[64]), "+f"(d[65]), "+f"(d[66]), "+f"(d[67])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "l"(db), "r"(scale_d));
#endif
}

template <class T> struct Wg;
template <> struct Wg<__nv_bfloat16> {
  static __device__ __forceinline__ void ss72(float (&d)[36], uint64_t da, uint64_t db, int s) { wgmma_ss_n72_bf16(d, da, db, s); }
  static __device__ __forceinline__ void rs72t(float (&d)[36], const uint32_t (&a)[4], uint64_t db, int s) { wgmma_rs_n72_tb_bf16(d, a, db, s); }
  static __device__ __forceinline__ void rs160(float (&d)[80], const uint32_t (&a)[4], uint64_t db, int s) { wgmma_rs_n160_bf16(d, a, db, s); }
  static __device__ __forceinline__ void rs136(float (&d)[80], const uint32_t (&a)[4], uint64_t db, int s) { wgmma_rs_n136_bf16(d, a, db, s); }
};
template <> struct Wg<__half> {
  static __device__ __forceinline__ void ss72(float (&d)[36], uint64_t da, uint64_t db, int s) { wgmma_ss_n72_f16(d, da, db, s); }
  static __device__ __forceinline__ void rs72t(float (&d)[36], const uint32_t (&a)[4], uint64_t db, int s) { wgmma_rs_n72_tb_f16(d, a, db, s); }
  static __device__ __forceinline__ void rs160(float (&d)[80], const uint32_t (&a)[4], uint64_t db, int s) { wgmma_rs_n160_f16(d, a, db, s); }
  static __device__ __forceinline__ void rs136(float (&d)[80], const uint32_t (&a)[4], uint64_t db, int s) { wgmma_rs_n136_f16(d, a, db, s); }
};

}  // namespace lawg
}  // namespace cuda
}  // namespace based_core
