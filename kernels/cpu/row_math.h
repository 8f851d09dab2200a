// Small vector helpers for the CPU kernels. Loops carry `omp simd` so that reductions vectorise
// without -ffast-math (which would also license the compiler to break the NaN/inf semantics we test).
#pragma once

#include <algorithm>
#include <cstdint>

#include "../params.h"
#include "isa.h"

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

// max(init, x[0..n)). GCC vectorises neither a plain std::max loop nor an omp simd max reduction over
// it without -ffinite-math-only (it keeps the compare chain's NaN order), so the lanes are kept
// explicitly: the element-wise max over a fixed-size block compiles to vmaxps. A NaN may or may not
// survive; callers feed the row's elements onward (the row sum), where a NaN shows either way.
template <typename Acc>
inline Acc max_of(const Acc* x, int64_t n, Acc init) {
  constexpr int64_t kLanes = 16;
  Acc lanes[kLanes];
  for (int64_t c = 0; c < kLanes; ++c) lanes[c] = init;
  int64_t t = 0;
  for (; t + kLanes <= n; t += kLanes)
    for (int64_t c = 0; c < kLanes; ++c) lanes[c] = std::max(lanes[c], x[t + c]);
  Acc result = init;
  for (int64_t c = 0; c < kLanes; ++c) result = std::max(result, lanes[c]);
  for (; t < n; ++t) result = std::max(result, x[t]);
  return result;
}

template <typename Acc>
inline void scale_in_place(Acc alpha, Acc* y, int64_t n) {
#pragma omp simd
  for (int64_t i = 0; i < n; ++i) y[i] *= alpha;
}

template <typename T, typename Acc>
inline void store(const Acc* src, Acc alpha, T* dst, int64_t n) {
#pragma omp simd
  for (int64_t i = 0; i < n; ++i) dst[i] = T(alpha * src[i]);
}

}  // namespace ACTATTN_CPU_ISA
}  // namespace cpu
}  // namespace actattn
