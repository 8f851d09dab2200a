// Small vector helpers for the CPU kernels. Loops carry `omp simd` so that reductions vectorise
// without -ffast-math (which would also license the compiler to break the NaN/inf semantics we test).
#pragma once

#include <algorithm>
#include <cstdint>

#include "../params.h"
#include "isa.h"
#include "tile_gemm.h"

namespace actattn {
namespace cpu {
inline namespace ACTATTN_CPU_ISA {

template <typename T>
inline T* row_ptr(const RowView& view, int64_t b, int64_t h, int64_t n) {
  return static_cast<T*>(view.data) + b * view.batch_stride + view.stored_head(h) * view.head_stride +
         n * view.row_stride;
}

template <typename Acc, typename X, typename Y>
inline Acc dot(const X* x, const Y* y, int64_t n) {
  Acc sum = 0;
#pragma omp simd reduction(+ : sum)
  for (int64_t i = 0; i < n; ++i) sum += Acc(x[i]) * Acc(y[i]);
  return sum;
}

// y += alpha * x
template <typename Acc, typename X>
inline void axpy(Acc alpha, const X* x, Acc* y, int64_t n) {
#pragma omp simd
  for (int64_t i = 0; i < n; ++i) y[i] += alpha * Acc(x[i]);
}

// Partial sums kept per lane of a vector register of floats (kCols is two vectors: tile_gemm.h), so that a
// running row sum needs no horizontal reduction until its end.
constexpr int64_t kLanes = kCols / 2;

// x[0] + ... + x[kLanes - 1], pairwise: log2(kLanes) dependent adds instead of kLanes.
template <typename Acc>
inline Acc sum_of_lanes(const Acc* x) {
  Acc lanes[kLanes];
  for (int64_t c = 0; c < kLanes; ++c) lanes[c] = x[c];
  for (int64_t width = kLanes / 2; width > 0; width /= 2)
    for (int64_t c = 0; c < width; ++c) lanes[c] += lanes[c + width];
  return lanes[0];
}

// max(init, x[0..n)). GCC vectorises neither a plain std::max loop nor an omp simd max reduction over
// it without -ffinite-math-only (it keeps the compare chain's NaN order), so the lanes are kept
// explicitly: the element-wise max over a fixed-size block compiles to vmaxps. A NaN may or may not
// survive; callers feed the row's elements onward (the row sum), where a NaN shows either way.
template <typename Acc>
inline Acc max_of(const Acc* x, int64_t n, Acc init) {
  constexpr int64_t kMaxLanes = 16;
  Acc lanes[kMaxLanes];
  for (int64_t c = 0; c < kMaxLanes; ++c) lanes[c] = init;
  int64_t t = 0;
  for (; t + kMaxLanes <= n; t += kMaxLanes)
    for (int64_t c = 0; c < kMaxLanes; ++c) lanes[c] = std::max(lanes[c], x[t + c]);
  for (; t < n; ++t) lanes[t % kMaxLanes] = std::max(lanes[t % kMaxLanes], x[t]);
  // Pairwise, as sum_of_lanes: 4 dependent steps instead of 16.
  for (int64_t width = kMaxLanes / 2; width > 0; width /= 2)
    for (int64_t c = 0; c < width; ++c) lanes[c] = std::max(lanes[c], lanes[c + width]);
  return lanes[0];
}

// dst[c * dst_stride + r] = src[r * src_stride + c] for r < rows, c < cols, in square blocks: within a block
// the strided side touches kBlock cache lines, which stay in L1 while the contiguous side is written. For
// large matrices (the linear state, Dk x Dv): row by row, every element of the strided side was a cache
// line of its own. The chunks' 64-row transposes keep their plain loops, which measured no slower.
template <typename Acc>
inline void transpose(const Acc* src, int64_t rows, int64_t cols, int64_t src_stride, Acc* dst, int64_t dst_stride) {
  constexpr int64_t kBlock = 16;
  for (int64_t r0 = 0; r0 < rows; r0 += kBlock)
    for (int64_t c0 = 0; c0 < cols; c0 += kBlock) {
      const int64_t r1 = std::min(r0 + kBlock, rows), c1 = std::min(c0 + kBlock, cols);
      for (int64_t c = c0; c < c1; ++c)
        for (int64_t r = r0; r < r1; ++r) dst[c * dst_stride + r] = src[r * src_stride + c];
    }
}

template <typename Acc>
inline void scale_in_place(Acc alpha, Acc* y, int64_t n) {
#pragma omp simd
  for (int64_t i = 0; i < n; ++i) y[i] *= alpha;
}

// No `omp simd` here: under it GCC turns the 16-bit types' temporaries (cpu::BFloat16) into per-lane
// arrays and gives up, and perf found the bf16 linear forward converting its outputs one element at a
// time (without the pragma that forward measured 16 % faster). The plain loop vectorises, with a
// run-time overlap check. (GCC 12 has no
// vector form of the _Float16 conversion, so float16 stores stay scalar either way.)
template <typename T, typename Acc>
inline void store(const Acc* src, Acc alpha, T* dst, int64_t n) {
  for (int64_t i = 0; i < n; ++i) dst[i] = T(alpha * src[i]);
}

}  // namespace ACTATTN_CPU_ISA
}  // namespace cpu
}  // namespace actattn
