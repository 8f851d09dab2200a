// Shared-memory layout and loaders of the generic linear-attention CUDA kernels (linear_forward.cu,
// linear_backward.cuh). Most blocks own one (batch, head) and a block of kColumns value columns: the
// state S restricted to those columns lives in shared memory, so columns of S and of the output are
// independent across blocks; the normaliser z and the denominators, which involve no value column, are
// recomputed by every block. (The backward's feature-gradient kernel splits the rows of S instead.)
#pragma once

#include "../feature_maps.h"
#include "../key_lengths.h"
#include "cuda_common.cuh"

namespace actattn {
namespace cuda {

constexpr int kLinearChunk = 16;   // rows per chunk
constexpr int kLinearThreads = 128;

// Value columns per block: 32 in float32 accumulation, 16 in float64 (same shared-memory bytes).
template <typename Acc>
constexpr int linear_columns() {
  return sizeof(Acc) == 8 ? 16 : 32;
}

template <typename Acc>
inline int64_t linear_column_blocks(int64_t v_dim) {
  return (v_dim + linear_columns<Acc>() - 1) / linear_columns<Acc>();
}

// Rows [start, start + rows) of phi-mapped q (times scale) or phi-mapped k into dst (rows x Dk); rows
// from `valid` on (padding keys) are zero.
template <typename T, typename Acc, typename Map>
__device__ void load_mapped(const RowView& view, int64_t b, int64_t h, int64_t start, int rows, int valid,
                            int64_t dim, Acc alpha, Acc* dst) {
  for (int64_t idx = threadIdx.x; idx < rows * dim; idx += blockDim.x) {
    const int64_t t = idx / dim, d = idx % dim;
    dst[idx] = t < valid ? alpha * Map::value(to_acc<Acc>(row_ptr<T>(view, b, h, start + t)[d])) : Acc(0);
  }
}

// Columns [col0, col0 + cols) of rows [start, start + rows) of phi-mapped q or k, times alpha, into dst
// (rows x kColumns); rows from `valid` on (padding keys) and columns from `cols` on are zero.
template <typename T, typename Acc, typename Map, int kColumns>
__device__ void load_mapped_columns(const RowView& view, int64_t b, int64_t h, int64_t start, int rows, int valid,
                                    int64_t col0, int cols, Acc alpha, Acc* dst) {
  for (int idx = threadIdx.x; idx < rows * kColumns; idx += blockDim.x) {
    const int t = idx / kColumns, e = idx % kColumns;
    dst[idx] = t < valid && e < cols ? alpha * Map::value(to_acc<Acc>(row_ptr<T>(view, b, h, start + t)[col0 + e]))
                                     : Acc(0);
  }
}

// Rows [start, start + rows) (all `dim` columns) into dst (rows x dim), row t times row_scale[t] (null:
// 1); rows from `valid` on are zero.
template <typename T, typename Acc>
__device__ void load_rows(const RowView& view, int64_t b, int64_t h, int64_t start, int rows, int valid,
                          int dim, const Acc* row_scale, Acc* dst) {
  for (int idx = threadIdx.x; idx < rows * dim; idx += blockDim.x) {
    const int t = idx / dim, e = idx % dim;
    const Acc x = t < valid ? to_acc<Acc>(row_ptr<T>(view, b, h, start + t)[e]) : Acc(0);
    dst[idx] = row_scale != nullptr ? x * row_scale[t] : x;
  }
}

// Rows of a chunk starting at `start` that are real keys of sequence b (not padding).
__device__ __forceinline__ int valid_rows(const LinearParams& p, int64_t b, int64_t start, int rows) {
  const int64_t n = keys_of(p.key_lengths, b, p.shape.k_len) - start;
  return static_cast<int>(n < 0 ? 0 : (n > rows ? rows : n));
}

// Columns [col0, col0 + cols) of rows [start, start + rows) into dst (rows x kColumns), times alpha_t
// (alpha may be null for 1); rows from `valid` on are zero.
template <typename T, typename Acc, int kColumns>
__device__ void load_columns(const RowView& view, int64_t b, int64_t h, int64_t start, int rows, int valid,
                             int64_t col0, int cols, const Acc* alpha, Acc* dst) {
  for (int idx = threadIdx.x; idx < rows * kColumns; idx += blockDim.x) {
    const int t = idx / kColumns, e = idx % kColumns;
    Acc value = Acc(0);
    if (e < cols && t < valid) value = to_acc<Acc>(row_ptr<T>(view, b, h, start + t)[col0 + e]);
    dst[idx] = alpha ? value * alpha[t] : value;
  }
}

// Slice (Dk x cols) of a contiguous (B, H, Dk, Dv) state, or zeros.
template <typename Acc, int kColumns>
__device__ void load_state_columns(const void* src, int64_t bh, int64_t qk_dim, int64_t v_dim, int64_t col0,
                                   int cols, Acc* dst) {
  for (int64_t idx = threadIdx.x; idx < qk_dim * kColumns; idx += blockDim.x) {
    const int64_t d = idx / kColumns;
    const int e = static_cast<int>(idx % kColumns);
    dst[idx] = (src != nullptr && e < cols)
                   ? static_cast<const Acc*>(src)[(bh * qk_dim + d) * v_dim + col0 + e]
                   : Acc(0);
  }
}

template <typename Acc, int kColumns>
__device__ void store_state_columns(const Acc* src, int64_t bh, int64_t qk_dim, int64_t v_dim, int64_t col0,
                                    int cols, void* dst) {
  for (int64_t idx = threadIdx.x; idx < qk_dim * kColumns; idx += blockDim.x) {
    const int64_t d = idx / kColumns;
    const int e = static_cast<int>(idx % kColumns);
    if (e < cols) static_cast<Acc*>(dst)[(bh * qk_dim + d) * v_dim + col0 + e] = src[idx];
  }
}

template <typename Acc>
__device__ void load_vector(const void* src, int64_t bh, int64_t dim, Acc* dst) {
  for (int64_t d = threadIdx.x; d < dim; d += blockDim.x)
    dst[d] = src != nullptr ? static_cast<const Acc*>(src)[bh * dim + d] : Acc(0);
}

// state (Dk x kColumns) += left^T (Dk x rows) right (rows x kColumns); vec (Dk) += left^T weight
// (weight null means 1). Each chunk's sum is formed before it is added (two-level summation).
template <typename Acc, int kColumns>
__device__ void absorb_chunk(const Acc* left, const Acc* right, const Acc* weight, int rows, int64_t qk_dim,
                             Acc* state, Acc* vec) {
  for (int64_t idx = threadIdx.x; idx < qk_dim * kColumns; idx += blockDim.x) {
    const int64_t d = idx / kColumns;
    const int e = static_cast<int>(idx % kColumns);
    Acc sum = Acc(0);
    for (int t = 0; t < rows; ++t) sum += left[t * qk_dim + d] * right[t * kColumns + e];
    state[idx] += sum;
  }
  for (int64_t d = threadIdx.x; d < qk_dim; d += blockDim.x) {
    Acc sum = Acc(0);
    for (int t = 0; t < rows; ++t) sum += left[t * qk_dim + d] * (weight ? weight[t] : Acc(1));
    vec[d] += sum;
  }
}

template <typename Acc>
__device__ __forceinline__ Acc dot_rows(const Acc* x, const Acc* y, int64_t n) {
  Acc sum = Acc(0);
  for (int64_t d = 0; d < n; ++d) sum += x[d] * y[d];
  return sum;
}

}  // namespace cuda
}  // namespace actattn
