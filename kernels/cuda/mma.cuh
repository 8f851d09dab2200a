// Warp-level tensor-core primitives for the float16 / bfloat16 kernels (sm_80 and newer):
// mma.sync m16n8k16 with float32 accumulation, ldmatrix loads from shared memory, and the
// global -> shared tile copies they feed on (cp.async, so that the next tile is in flight while the
// current one is multiplied).
//
// Fragment layouts (PTX ISA, "Matrix fragments for mma.m16n8k16"), with g = lane / 4, t = lane % 4:
//   A (16 x 16, row-major) FragA.x[0..3]: (g, 2t..2t+1), (g+8, 2t..), (g, 2t+8..), (g+8, 2t+8..)
//   B (16 x 8, k x n)      two registers:  (k = 2t..2t+1, n = g), (k = 2t+8.., n = g)
//   C (16 x 8, float32)    FragC.x[0..3]:  (g, 2t), (g, 2t+1), (g+8, 2t), (g+8, 2t+1)
// Two accumulator tiles side by side (columns 16c .. 16c+15) hold exactly the A fragment of a
// 16-wide k-step, so a probability tile P computed in registers feeds P V without leaving them.
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <cstdint>

#include "cuda_common.cuh"

namespace actattn {
namespace cuda {
namespace mma {

struct FragA {
  uint32_t x[4];
};

struct FragC {
  float x[4];
};

template <int N>
__device__ __forceinline__ void zero(FragC (&tiles)[N]) {
#pragma unroll
  for (int i = 0; i < N; ++i) tiles[i].x[0] = tiles[i].x[1] = tiles[i].x[2] = tiles[i].x[3] = 0.f;
}

#if defined(ACTATTN_WARP_EMULATION)
// d += a b for one 16 x 8 tile (emulated: kernels/cuda/warp_emulation.h).
template <typename T>
inline void mma_16816(FragC& d, const FragA& a, uint32_t b0, uint32_t b1) {
  emulated_mma<T>(d, a, b0, b1);
}
#else
// d += a b for one 16 x 8 tile.
template <typename T>
__device__ __forceinline__ void mma_16816(FragC& d, const FragA& a, uint32_t b0, uint32_t b1);

template <>
__device__ __forceinline__ void mma_16816<__half>(FragC& d, const FragA& a, uint32_t b0, uint32_t b1) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
  asm volatile(
      "mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9}, "
      "{%0, %1, %2, %3};\n"
      : "+f"(d.x[0]), "+f"(d.x[1]), "+f"(d.x[2]), "+f"(d.x[3])
      : "r"(a.x[0]), "r"(a.x[1]), "r"(a.x[2]), "r"(a.x[3]), "r"(b0), "r"(b1));
#else
  __trap();  // the host never launches tensor-core kernels below sm_80
#endif
}

template <>
__device__ __forceinline__ void mma_16816<__nv_bfloat16>(FragC& d, const FragA& a, uint32_t b0, uint32_t b1) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
  asm volatile(
      "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9}, "
      "{%0, %1, %2, %3};\n"
      : "+f"(d.x[0]), "+f"(d.x[1]), "+f"(d.x[2]), "+f"(d.x[3])
      : "r"(a.x[0]), "r"(a.x[1]), "r"(a.x[2]), "r"(a.x[3]), "r"(b0), "r"(b1));
#else
  __trap();
#endif
}

// Four 8 x 8 matrices of 16-bit values from shared memory; lanes 8j .. 8j+7 give the rows of matrix j.
__device__ __forceinline__ void ldmatrix_x4(uint32_t (&r)[4], const void* shared, bool transpose) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
  const uint32_t address = static_cast<uint32_t>(__cvta_generic_to_shared(shared));
  if (transpose) {
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0, %1, %2, %3}, [%4];\n"
                 : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
                 : "r"(address));
  } else {
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0, %1, %2, %3}, [%4];\n"
                 : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
                 : "r"(address));
  }
#else
  __trap();
#endif
}

// Asynchronous copies (cp.async, sm_80+): `bytes` (4, 8 or 16) from global to shared memory without a
// register round trip, or zeros when !inside (source size 0: nothing is read). They complete at
// cp_async_wait_all(), for the issuing thread only: a __syncthreads() must follow before other threads
// read them. 16-byte copies bypass L1 (.cg); the smaller ones can only go through it (.ca).
template <int kBytes>
__device__ __forceinline__ void cp_async(void* shared, const void* global, bool inside) {
  static_assert(kBytes == 4 || kBytes == 8 || kBytes == 16, "cp.async copies 4, 8 or 16 bytes");
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
  const uint32_t address = static_cast<uint32_t>(__cvta_generic_to_shared(shared));
  const int source_bytes = inside ? kBytes : 0;
  if constexpr (kBytes == 16) {
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(address), "l"(global), "r"(source_bytes));
  } else {
    asm volatile("cp.async.ca.shared.global [%0], [%1], %2, %3;\n" ::"r"(address), "l"(global), "n"(kBytes),
                 "r"(source_bytes));
  }
#else
  __trap();
#endif
}

// Closes the group of copies issued so far and waits until every copy this thread issued has landed.
__device__ __forceinline__ void cp_async_wait_all() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
  asm volatile("cp.async.commit_group;\ncp.async.wait_group 0;\n" ::: "memory");
#else
  __trap();
#endif
}

#endif

// Two floats as one register of two 16-bit values, the lower column in the low half.
template <typename T>
__device__ __forceinline__ uint32_t pack(float lo, float hi);

template <>
__device__ __forceinline__ uint32_t pack<__half>(float lo, float hi) {
  const __half2 pair = __floats2half2_rn(lo, hi);
  return *reinterpret_cast<const uint32_t*>(&pair);
}

template <>
__device__ __forceinline__ uint32_t pack<__nv_bfloat16>(float lo, float hi) {
  const __nv_bfloat162 pair = __floats2bfloat162_rn(lo, hi);
  return *reinterpret_cast<const uint32_t*>(&pair);
}

// Accumulator tiles 2c and 2c+1 (columns 16c .. 16c+15), rounded to T, as the A fragment of k-step c.
template <typename T>
__device__ __forceinline__ FragA to_a(const FragC& left, const FragC& right) {
  return FragA{{pack<T>(left.x[0], left.x[1]), pack<T>(left.x[2], left.x[3]), pack<T>(right.x[0], right.x[1]),
                pack<T>(right.x[2], right.x[3])}};
}

// A fragment of the 16 x 16 block at `tile` (row-major, leading dimension ld elements).
// Lane L addresses row L % 16, column 8 (L / 16): matrices (rows 0-7 | 8-15) x (cols 0-7 | 8-15) in
// the order of FragA's registers.
template <typename T>
__device__ __forceinline__ FragA load_a(const T* tile, int ld, int lane) {
  FragA a;
  ldmatrix_x4(a.x, tile + (lane % 16) * ld + (lane / 16) * 8, false);
  return a;
}

// A fragment of the 16 x 16 block A whose transpose is stored at `tile` (element (m, k) at tile[k ld + m]):
// phi(K)^T for S += phi(K)^T V. Transposing loads; lane L addresses row (L % 8) + 8 (L / 16), column
// 8 ((L / 8) % 2), so the four matrices come in FragA's order (m 0-7 | 8-15 first, then k).
template <typename T>
__device__ __forceinline__ FragA load_a_transposed(const T* tile, int ld, int lane) {
  FragA a;
  ldmatrix_x4(a.x, tile + ((lane % 8) + 8 * (lane / 16)) * ld + 8 * ((lane / 8) % 2), true);
  return a;
}

// B fragments of two adjacent n-tiles for one k-step, when B's columns are stored as rows: `rows`
// points at row n0, column k0 of an (n x k) row-major block (K for Q K^T). b[0], b[1] belong to
// n-tile n0 and b[2], b[3] to n-tile n0 + 8. Lane L addresses row (L % 8) + 8 (L / 16), column 8 ((L / 8) % 2).
template <typename T>
__device__ __forceinline__ void load_b_from_rows(uint32_t (&b)[4], const T* rows, int ld, int lane) {
  ldmatrix_x4(b, rows + ((lane % 8) + 8 * (lane / 16)) * ld + 8 * ((lane / 8) % 2), false);
}

// The same, when B is stored as it is: `block` points at row k0, column n0 of a (k x n) row-major block
// (V for P V). Transposing loads; lane L addresses row (L % 8) + 8 ((L / 8) % 2), column 8 (L / 16).
template <typename T>
__device__ __forceinline__ void load_b_from_cols(uint32_t (&b)[4], const T* block, int ld, int lane) {
  ldmatrix_x4(b, block + ((lane % 8) + 8 * ((lane / 8) % 2)) * ld + 8 * (lane / 16), true);
}

// acc (16 x 8 N) += a B^T for one 16-wide k-step, where B (8 N x 16) is stored as rows of `rows`
// (row-major, ld).
template <typename T, int N>
__device__ __forceinline__ void mma_step_a_bt(FragC (&acc)[N], const FragA& a, const T* rows, int ld, int lane) {
  static_assert(N % 2 == 0, "n-tiles come in pairs");
#pragma unroll
  for (int np = 0; np < N / 2; ++np) {
    uint32_t b[4];
    load_b_from_rows(b, rows + np * 16 * ld, ld, lane);
    mma_16816<T>(acc[2 * np], a, b[0], b[1]);
    mma_16816<T>(acc[2 * np + 1], a, b[2], b[3]);
  }
}

// acc (16 x 8 N) += a B for one 16-wide k-step, where B (16 x 8 N) is stored row-major at `block` (ld).
template <typename T, int N>
__device__ __forceinline__ void mma_step_a_b(FragC (&acc)[N], const FragA& a, const T* block, int ld, int lane) {
  static_assert(N % 2 == 0, "n-tiles come in pairs");
#pragma unroll
  for (int np = 0; np < N / 2; ++np) {
    uint32_t b[4];
    load_b_from_cols(b, block + np * 16, ld, lane);
    mma_16816<T>(acc[2 * np], a, b[0], b[1]);
    mma_16816<T>(acc[2 * np + 1], a, b[2], b[3]);
  }
}

// n-tiles [kFirst, kFirst + M) of a row strip's accumulators, as an array of their own: a product that
// fills part of the strip.
template <int kFirst, int M, int N>
__device__ __forceinline__ FragC (&tiles_of(FragC (&acc)[N]))[M] {
  static_assert(kFirst + M <= N, "tiles within the strip");
  return *reinterpret_cast<FragC(*)[M]>(acc + kFirst);
}

// acc (16 x 8 N) += A B^T, A (16 x 16 kSteps) given as fragments, B (8 N x 16 kSteps) stored row-major at
// `rows` (ld): scores from queries in registers and a key tile in shared memory.
template <typename T, int kSteps, int N>
__device__ __forceinline__ void mma_a_bt(FragC (&acc)[N], const FragA (&a)[kSteps], const T* rows, int ld, int lane) {
#pragma unroll
  for (int ks = 0; ks < kSteps; ++ks) mma_step_a_bt<T>(acc, a[ks], rows + ks * 16, ld, lane);
}

// The same with A read from shared memory (a_tile: 16 rows x 16 kSteps, row-major, lda), for operands too
// large to keep in registers across a loop.
template <typename T, int kSteps, int N>
__device__ __forceinline__ void mma_shared_a_bt(FragC (&acc)[N], const T* a_tile, int lda, const T* rows, int ld,
                                                int lane) {
#pragma unroll
  for (int ks = 0; ks < kSteps; ++ks) {
    mma_step_a_bt<T>(acc, load_a(a_tile + ks * 16, lda, lane), rows + ks * 16, ld, lane);
  }
}

// acc (16 x 8 N) += A B, A (16 x 16 kSteps) read from shared memory (row-major at a_tile, or stored
// transposed when kTransposedA: element (m, k) at a_tile[k lda + m]) and B (16 kSteps x 8 N) stored
// row-major at `block` (ld): products with a state or gradient tile as the right factor.
template <typename T, int kSteps, int N, bool kTransposedA = false>
__device__ __forceinline__ void mma_shared_a_b(FragC (&acc)[N], const T* a_tile, int lda, const T* block, int ld,
                                               int lane) {
#pragma unroll
  for (int ks = 0; ks < kSteps; ++ks) {
    const FragA a = kTransposedA ? load_a_transposed(a_tile + ks * 16 * lda, lda, lane)
                                 : load_a(a_tile + ks * 16, lda, lane);
    mma_step_a_b<T>(acc, a, block + ks * 16 * ld, ld, lane);
  }
}

// acc (16 x 8 N) += P B, where P (16 x 16 kSteps) is given as accumulator tiles (2 kSteps of them) and B
// (16 kSteps x 8 N) is stored row-major at `block` (ld).
template <typename T, int kSteps, int N>
__device__ __forceinline__ void mma_p_b(FragC (&acc)[N], const FragC (&p)[2 * kSteps], const T* block, int ld,
                                        int lane) {
#pragma unroll
  for (int ks = 0; ks < kSteps; ++ks) {
    mma_step_a_b<T>(acc, to_a<T>(p[2 * ks], p[2 * ks + 1]), block + ks * 16 * ld, ld, lane);
  }
}

// Starts copying rows [row0, row0 + kRows) x kCols columns of a (batch, head) slice into shared memory
// (leading dimension ld) with cp.async, 16 bytes per copy, spread over the block's kThreads threads; rows
// from `valid` on are zero-filled (as load_tile). The slice's address is recomputed from the view (a
// kernel parameter) at each call rather than kept in registers across the kernels' loops, where the
// float32 accumulators need them. Lands at cp_async_wait_all() + __syncthreads().
template <typename T, int kRows, int kCols, int kThreads>
__device__ __forceinline__ void load_tile_async(T* shared, int ld, const RowView& view, int64_t b, int64_t h,
                                                int64_t row0, int64_t valid) {
  constexpr int kChunks = kCols / 8;  // 8 elements of 2 bytes per 16-byte copy
  const T* slice = row_ptr<const T>(view, b, h, 0);
  if constexpr (kThreads % kChunks == 0) {
    // A step copies whole rows, so each thread keeps one column for all its steps.
    constexpr int kRowsPerStep = kThreads / kChunks;
    static_assert(kRows % kRowsPerStep == 0, "every thread copies the same chunks");
    const int first_row = static_cast<int>(threadIdx.x) / kChunks, column = (threadIdx.x % kChunks) * 8;
    const T* source = slice + (row0 + first_row) * view.row_stride + column;
    T* target = shared + first_row * ld + column;
    // This thread's rows inside [row0, valid), counted in 32 bits (at most kRows matter).
    const int64_t rows_left = valid - row0 - first_row;
    const int rows_inside = rows_left <= 0 ? 0 : rows_left >= kRows ? kRows : static_cast<int>(rows_left);
#pragma unroll
    for (int step = 0; step < kRows / kRowsPerStep; ++step) {
      const bool inside = step * kRowsPerStep < rows_inside;
      // Outside the rows nothing is read; the slice's first row stands in as a valid address.
      cp_async<16>(target + step * kRowsPerStep * ld, inside ? source + step * kRowsPerStep * view.row_stride : slice,
                   inside);
    }
  } else {
    // Rows of a width that does not divide the block (D = 96: 12 copies per row): the tile's copies are
    // numbered row by row and dealt out in turn, each thread finding its row and column per copy.
    static_assert(kRows * kChunks % kThreads == 0, "every thread copies the same number of chunks");
    // The tile's rows inside [row0, valid), counted in 32 bits (at most kRows matter).
    const int64_t rows_left = valid - row0;
    const int rows_inside = rows_left <= 0 ? 0 : rows_left >= kRows ? kRows : static_cast<int>(rows_left);
#pragma unroll
    for (int step = 0; step < kRows * kChunks / kThreads; ++step) {
      const int chunk = step * kThreads + static_cast<int>(threadIdx.x);
      const int row = chunk / kChunks, column = (chunk % kChunks) * 8;
      const bool inside = row < rows_inside;
      cp_async<16>(shared + row * ld + column, inside ? slice + (row0 + row) * view.row_stride + column : slice,
                   inside);
    }
  }
}

// The same for kRows floats of a per-row vector (log-sum-exp, delta) from `row0` on, 4 bytes per copy
// (their rows are not 16-byte aligned in general); rows from `valid` on are zero.
template <int kRows, int kThreads>
__device__ __forceinline__ void load_floats_async(float* shared, const float* vector, int64_t row0, int64_t valid) {
  for (int r = static_cast<int>(threadIdx.x); r < kRows; r += kThreads) {
    const bool inside = row0 + r < valid;
    cp_async<4>(shared + r, vector + (inside ? row0 + r : 0), inside);
  }
}

}  // namespace mma
}  // namespace cuda
}  // namespace actattn
