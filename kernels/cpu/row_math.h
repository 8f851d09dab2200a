// Small vector helpers for the CPU kernels. Loops carry `omp simd` so that reductions vectorise
// without -ffast-math (which would also license the compiler to break the NaN/inf semantics we test).
#pragma once

#include <cstdint>

#include "../params.h"

namespace actattn {
namespace cpu {

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

}  // namespace cpu
}  // namespace actattn
