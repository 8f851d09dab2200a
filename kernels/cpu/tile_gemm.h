// Register-blocked products of small tiles for the quadratic-attention CPU kernels. Each helper works
// on kRows rows at a time and keeps a kRows x kCols block of accumulators in registers across the
// reduction, so the inner loop does kRows * kCols FMAs per kCols loads instead of one load and one
// store per FMA (the axpy form). Sizes are compile-time, so the compiler vectorises the kCols loop.
// A row block is always kRows rows: callers pad missing rows with zeros and ignore their results.
#pragma once

#include <cstdint>

#include "isa.h"

namespace actattn {
namespace cpu {
inline namespace ACTATTN_CPU_ISA {

// kCols is two vectors of floats, so each row of the block is two independent FMA chains. The
// block must leave registers for one row of b (two vectors) and the broadcast a: AVX2 and SSE2 have
// 16 vector registers (8 accumulators), AVX-512 has 32 (16 accumulators, which also covers its FMA
// latency times two FMA ports).
#if defined(__AVX512F__)
constexpr int kRows = 8;
constexpr int kCols = 32;
#elif defined(__AVX2__)
constexpr int kRows = 4;
constexpr int kCols = 16;
#else
constexpr int kRows = 4;
constexpr int kCols = 8;
#endif

// Columns computed for n visible ones: n rounded up to whole register blocks.
inline int64_t padded_width(int64_t n) { return (n + kCols - 1) / kCols * kCols; }

// out (kRows x width) = init + a (kRows x depth, row stride a_stride) @ b (depth x width, row stride
// b_stride). width must be a multiple of kCols (tiles are padded to kKeyTile columns).
template <typename Acc>
inline void rows_times_matrix(const Acc* a, int64_t a_stride, const Acc* b, int64_t b_stride, int64_t depth,
                              int64_t width, Acc init, Acc* out, int64_t out_stride) {
  for (int64_t c0 = 0; c0 < width; c0 += kCols) {
    Acc acc[kRows][kCols];
    for (int r = 0; r < kRows; ++r)
      for (int c = 0; c < kCols; ++c) acc[r][c] = init;
    for (int64_t d = 0; d < depth; ++d) {
      const Acc* brow = b + d * b_stride + c0;
      for (int r = 0; r < kRows; ++r) {
        const Acc av = a[r * a_stride + d];
#pragma omp simd
        for (int c = 0; c < kCols; ++c) acc[r][c] += av * brow[c];
      }
    }
    for (int r = 0; r < kRows; ++r)
      for (int c = 0; c < kCols; ++c) out[r * out_stride + c0 + c] = acc[r][c];
  }
}

// acc (kRows x width, row stride acc_stride) += P (kRows x depth) @ m (depth x width, row stride width), with
// P's element (r, t) at p[r * row_step + t * depth_step]; any width (a scalar tail handles width % kCols).
// Each P element is broadcast from memory, so reading P transposed (row_step 1) costs nothing extra and
// spares the caller a transposed copy.
template <typename Acc>
inline void accumulate_strided_rows_times_matrix(const Acc* p, int64_t row_step, int64_t depth_step, const Acc* m,
                                                 int64_t depth, int64_t width, Acc* acc, int64_t acc_stride) {
  int64_t c0 = 0;
  for (; c0 + kCols <= width; c0 += kCols) {
    Acc block[kRows][kCols];
    for (int r = 0; r < kRows; ++r)
      for (int c = 0; c < kCols; ++c) block[r][c] = acc[r * acc_stride + c0 + c];
    for (int64_t t = 0; t < depth; ++t) {
      const Acc* mrow = m + t * width + c0;
      for (int r = 0; r < kRows; ++r) {
        const Acc pv = p[r * row_step + t * depth_step];
#pragma omp simd
        for (int c = 0; c < kCols; ++c) block[r][c] += pv * mrow[c];
      }
    }
    for (int r = 0; r < kRows; ++r)
      for (int c = 0; c < kCols; ++c) acc[r * acc_stride + c0 + c] = block[r][c];
  }
  for (int64_t c = c0; c < width; ++c)
    for (int r = 0; r < kRows; ++r) {
      Acc sum = acc[r * acc_stride + c];
      for (int64_t t = 0; t < depth; ++t) sum += p[r * row_step + t * depth_step] * m[t * width + c];
      acc[r * acc_stride + c] = sum;
    }
}

// acc += p (kRows x depth, row stride p_stride) @ m.
template <typename Acc>
inline void accumulate_rows_times_matrix(const Acc* p, int64_t p_stride, const Acc* m, int64_t depth, int64_t width,
                                         Acc* acc, int64_t acc_stride) {
  accumulate_strided_rows_times_matrix(p, p_stride, 1, m, depth, width, acc, acc_stride);
}

// acc += p^T @ m, where p is depth x (at least kRows) with row stride p_stride: output row r takes p's column r.
template <typename Acc>
inline void accumulate_columns_times_matrix(const Acc* p, int64_t p_stride, const Acc* m, int64_t depth,
                                            int64_t width, Acc* acc, int64_t acc_stride) {
  accumulate_strided_rows_times_matrix(p, 1, p_stride, m, depth, width, acc, acc_stride);
}

}  // namespace ACTATTN_CPU_ISA
}  // namespace cpu
}  // namespace actattn
