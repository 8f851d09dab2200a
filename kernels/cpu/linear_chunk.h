// Building blocks of the linear-attention CPU kernels: one chunk of C consecutive rows loaded into
// accumulation-type buffers with the feature map applied (a_t = scale * phi(q_t), b_t = phi(k_t), v_t),
// the running state S, z, and chunk-by-state products. Products go kRows rows at a time through the
// register-blocked helpers of tile_gemm.h; chunk buffers are zero past their rows, up to a whole
// number of kRows, so the padded rows contribute nothing.
#pragma once

#include <algorithm>
#include <vector>

#include "../key_lengths.h"
#include "../params.h"
#include "isa.h"
#include "row_math.h"
#include "tile_gemm.h"

namespace actattn {
namespace cpu {
inline namespace ACTATTN_CPU_ISA {

constexpr int64_t kLinearChunk = 64;
static_assert(kLinearChunk % kRows == 0, "chunks must hold whole register blocks");

inline int64_t padded_rows(int64_t rows) { return (rows + kRows - 1) / kRows * kRows; }

// dst (dim x kLinearChunk) = src (rows x dim)^T. Columns past `rows` keep what they held: the causal
// products below assign zero to the scores they would feed, never multiply by them.
template <typename Acc>
void transpose_chunk(const Acc* src, int64_t rows, int64_t dim, Acc* dst) {
  for (int64_t t = 0; t < rows; ++t)
    for (int64_t d = 0; d < dim; ++d) dst[d * kLinearChunk + t] = src[t * dim + d];
}

template <typename Acc>
struct LinearChunk {
  int64_t rows = 0;
  std::vector<Acc> a, b, v;  // kLinearChunk x Dk, kLinearChunk x Dk, kLinearChunk x Dv
  std::vector<Acc> b_t;      // Dk x kLinearChunk, filled by transpose_b()

  LinearChunk(int64_t qk_dim, int64_t v_dim)
      : a(kLinearChunk * qk_dim), b(kLinearChunk * qk_dim), v(kLinearChunk * v_dim), b_t(qk_dim * kLinearChunk) {}

  // b^T, the right factor of the intra-chunk scores a b^T.
  void transpose_b(int64_t qk_dim) { transpose_chunk(b.data(), rows, qk_dim, b_t.data()); }

  const Acc* a_row(int64_t t, int64_t qk_dim) const { return a.data() + t * qk_dim; }
  const Acc* b_row(int64_t t, int64_t qk_dim) const { return b.data() + t * qk_dim; }
  const Acc* v_row(int64_t t, int64_t v_dim) const { return v.data() + t * v_dim; }
};

// Zeroes rows [rows, padded_rows(rows)) of a (kLinearChunk x dim) buffer.
template <typename Acc>
void zero_padding_rows(std::vector<Acc>& buffer, int64_t rows, int64_t dim) {
  std::fill(buffer.begin() + rows * dim, buffer.begin() + padded_rows(rows) * dim, Acc(0));
}

// Loads phi-mapped queries of rows [start, start + rows) into chunk.a.
template <typename T, typename Acc, typename Map>
void load_queries(const LinearParams& p, int64_t b, int64_t h, int64_t start, int64_t rows, LinearChunk<Acc>& c) {
  const int64_t dk = p.shape.qk_dim;
  const Acc scale = Acc(p.scale);
  c.rows = rows;
  for (int64_t t = 0; t < rows; ++t) {
    const T* q = row_ptr<T>(p.q, b, h, start + t);
    for (int64_t d = 0; d < dk; ++d) c.a[t * dk + d] = scale * Map::value(Acc(q[d]));
  }
  zero_padding_rows(c.a, rows, dk);
}

// Loads phi-mapped keys and values of rows [start, start + rows) into chunk.b and chunk.v. Padding keys
// (past the sequence's key length) load as zeros, so they add nothing to any state or product.
template <typename T, typename Acc, typename Map>
void load_keys_values(const LinearParams& p, int64_t b, int64_t h, int64_t start, int64_t rows,
                      LinearChunk<Acc>& c) {
  const int64_t dk = p.shape.qk_dim, dv = p.shape.v_dim;
  const int64_t valid = std::clamp<int64_t>(keys_of(p.key_lengths, b, p.shape.k_len) - start, 0, rows);
  c.rows = rows;
  std::fill(c.b.begin() + valid * dk, c.b.begin() + rows * dk, Acc(0));
  std::fill(c.v.begin() + valid * dv, c.v.begin() + rows * dv, Acc(0));
  for (int64_t t = 0; t < valid; ++t) {
    const T* k = row_ptr<T>(p.k, b, h, start + t);
    const T* v = row_ptr<T>(p.v, b, h, start + t);
    for (int64_t d = 0; d < dk; ++d) c.b[t * dk + d] = Map::value(Acc(k[d]));
    for (int64_t e = 0; e < dv; ++e) c.v[t * dv + e] = Acc(v[e]);
  }
  zero_padding_rows(c.b, rows, dk);
  zero_padding_rows(c.v, rows, dv);
}

// out (padded_rows(rows) x width) = x (rows x depth, zero-padded) @ m (depth x width).
template <typename Acc>
void chunk_times_matrix(const Acc* x, int64_t rows, int64_t depth, const Acc* m, int64_t width, Acc* out) {
  std::fill(out, out + padded_rows(rows) * width, Acc(0));
  for (int64_t r0 = 0; r0 < rows; r0 += kRows)
    accumulate_rows_times_matrix(x + r0 * depth, depth, m, depth, width, out + r0 * width, width);
}

// The masked C x C part of a chunk, one register block of rows [r0, r0 + kRows) at a time:
//   out[i] += sum_j M[i, j] x[j],  M[i, j] = left_i . right_j + bias_j  for the causal pairs j < rows and
//   j <= i (kLower: query rows i against key columns j) or j >= i (key rows i against query columns j).
// right_t is right transposed (depth x kLinearChunk); bias may be null; row_sums[r] (if non-null) gets
// row r's sum of M. M is formed by the register-blocked product over whole kCols column blocks into
// `scores` (kRows x kLinearChunk). The columns every row of the block sees go through the blocked
// product with x; the kRows diagonal columns, which each row sees only in part, are added row by row,
// so that a row never multiplies the x of a column it must not see (0 * inf would be NaN).
template <bool kLower, typename Acc>
void causal_block_product(const Acc* left, int64_t left_stride, const Acc* right_t, int64_t depth, const Acc* bias,
                          const Acc* x, int64_t width, int64_t r0, int64_t rows, Acc* scores, Acc* out,
                          Acc* row_sums) {
  const int64_t diagonal_end = std::min<int64_t>(r0 + kRows, rows);
  const int64_t j_begin = kLower ? 0 : r0, j_end = kLower ? diagonal_end : rows;
  const int64_t full_begin = kLower ? 0 : diagonal_end, full_end = kLower ? r0 : rows;
  if (row_sums != nullptr) std::fill(row_sums, row_sums + kRows, Acc(0));
  if (j_begin >= j_end) return;
  const int64_t c_begin = j_begin / kCols * kCols;
  rows_times_matrix(left + r0 * left_stride, left_stride, right_t + c_begin, kLinearChunk, depth,
                    padded_width(j_end - c_begin), Acc(0), scores + c_begin, kLinearChunk);
  for (int64_t r = 0; r < kRows; ++r) {
    Acc* m = scores + r * kLinearChunk;
    const int64_t i = r0 + r;
    int64_t lo = kLower ? j_begin : std::max(i, j_begin), hi = kLower ? std::min(i + 1, j_end) : j_end;
    if (i >= rows) lo = hi = j_begin;  // a padding row sees nothing
    std::fill(m + j_begin, m + lo, Acc(0));
    std::fill(m + hi, m + j_end, Acc(0));
    Acc sum = 0;
    for (int64_t j = lo; j < hi; ++j) {
      if (bias != nullptr) m[j] += bias[j];
      sum += m[j];
    }
    if (row_sums != nullptr) row_sums[r] = sum;
    for (int64_t j = std::max(lo, r0); j < std::min(hi, diagonal_end); ++j)
      axpy(m[j], x + j * width, out + i * width, width);
  }
  if (full_begin < full_end) {
    accumulate_rows_times_matrix(scores + full_begin, kLinearChunk, x + full_begin * width, full_end - full_begin,
                                 width, out + r0 * width, width);
  }
}

// A running (Dk x Dv) matrix and (Dk) vector sum, the state S, z of linear attention (or its gradient),
// grown one chunk at a time. Each chunk's terms are first summed on their own and then added, so the
// rounding error grows like C + N / C instead of N: in float32 this is what keeps the kernel within
// the error of torch's matmul composite.
template <typename Acc>
struct RunningState {
  int64_t qk_dim, v_dim;
  std::vector<Acc> kv, normalizer, chunk_kv, chunk_normalizer;
  std::vector<Acc> left_transposed;  // (padded Dk x kLinearChunk): add_chunk's left factor, transposed
  std::vector<Acc> kv_transposed;    // (Dv x Dk), filled by transposed()
  bool transposed_is_current = false;  // kv_transposed holds kv^T: nothing changed kv since it was made

  RunningState(int64_t qk_dim_, int64_t v_dim_)
      : qk_dim(qk_dim_),
        v_dim(v_dim_),
        kv(qk_dim_ * v_dim_),
        normalizer(qk_dim_),
        chunk_kv(padded_rows(qk_dim_) * v_dim_),
        chunk_normalizer(qk_dim_),
        left_transposed(padded_rows(qk_dim_) * kLinearChunk),
        kv_transposed(qk_dim_ * v_dim_) {}

  // Starts from slice bh of contiguous (B, H, Dk, Dv) and (B, H, Dk) tensors; null pointers mean zeros.
  void load(const void* kv_src, const void* normalizer_src, int64_t bh) {
    load_slice(kv_src, bh, kv);
    load_slice(normalizer_src, bh, normalizer);
    transposed_is_current = false;
  }

  void store(void* kv_dst, void* normalizer_dst, int64_t bh) const {
    std::copy(kv.begin(), kv.end(), static_cast<Acc*>(kv_dst) + bh * qk_dim * v_dim);
    std::copy(normalizer.begin(), normalizer.end(), static_cast<Acc*>(normalizer_dst) + bh * qk_dim);
  }

  // Adds sum_t left_t right_t^T to kv and sum_t left_t * weight_t to normalizer over `rows` rows
  // (left: rows x Dk, right: rows x Dv, both zero-padded to whole register blocks; null weight means 1).
  // left^T right is formed kRows state rows at a time with the whole chunk as the reduction, so each
  // block of the state stays in registers (the chunk-row-at-a-time form re-read and re-wrote the whole
  // state kLinearChunk / kRows times per chunk).
  void add_chunk(const Acc* left, const Acc* right, const Acc* weight, int64_t rows) {
    std::fill(chunk_kv.begin(), chunk_kv.end(), Acc(0));
    std::fill(chunk_normalizer.begin(), chunk_normalizer.end(), Acc(0));
    for (int64_t t = 0; t < rows; ++t)
      for (int64_t d = 0; d < qk_dim; ++d) left_transposed[d * kLinearChunk + t] = left[t * qk_dim + d];
    for (int64_t d0 = 0; d0 < qk_dim; d0 += kRows)
      accumulate_rows_times_matrix(left_transposed.data() + d0 * kLinearChunk, kLinearChunk, right, rows, v_dim,
                                   chunk_kv.data() + d0 * v_dim, v_dim);
    for (int64_t t = 0; t < rows; ++t) axpy(weight ? weight[t] : Acc(1), left + t * qk_dim, chunk_normalizer.data(), qk_dim);
    axpy(Acc(1), chunk_kv.data(), kv.data(), qk_dim * v_dim);
    axpy(Acc(1), chunk_normalizer.data(), normalizer.data(), qk_dim);
    transposed_is_current = false;
  }

  // kv^T (Dv x Dk), made again only after kv changed: a non-causal pass reads one fixed state for every
  // chunk, and transposing it per chunk cost as much as the pass's products.
  const Acc* transposed() {
    if (!transposed_is_current) transpose(kv.data(), qk_dim, v_dim, v_dim, kv_transposed.data(), qk_dim);
    transposed_is_current = true;
    return kv_transposed.data();
  }

 private:
  static void load_slice(const void* src, int64_t bh, std::vector<Acc>& dst) {
    if (src == nullptr) {
      std::fill(dst.begin(), dst.end(), Acc(0));
    } else {
      const Acc* from = static_cast<const Acc*>(src) + bh * static_cast<int64_t>(dst.size());
      std::copy(from, from + dst.size(), dst.begin());
    }
  }
};

// state += sum_t b_t v_t^T, normalizer += sum_t b_t over the chunk's keys.
template <typename Acc>
void absorb_keys(const LinearChunk<Acc>& c, RunningState<Acc>& state) {
  state.add_chunk(c.b.data(), c.v.data(), nullptr, c.rows);
}

}  // namespace ACTATTN_CPU_ISA
}  // namespace cpu
}  // namespace actattn
