// Quadratic attention backward on tensor cores (float16 / bfloat16, head dim 64 or 128, sm_80+), by
// recomputation of the scores tile by tile:
//   s_ij = scale q_i.k_j + bias, p_ij = prob(s_ij), dp_ij = dO_i.v_j, ds_ij = dscore(s_ij, p_ij, dp_ij, delta_i)
//   dV = P^T dO,  dK = scale dS^T Q,  dQ = scale dS K
// (softmax: p_ij = exp(s_ij - lse_i) from the forward's log-sum-exp, delta_i = dO_i.O_i written beforehand
// by the generic delta kernel).
//
// Two kernels, each owning what it writes, so gradients are bit-identical run to run (no atomics):
//  - key gradients: a block of 4 warps owns 64 keys (16 per warp) and walks the query tiles that see
//    them; per tile each warp forms S^T = K Q^T and dP^T = V dO^T (16 keys x Bq queries) with mma.sync,
//    turns them into P^T and dS^T in registers, and adds P^T dO and dS^T Q to its float32 dV, dK;
//  - query gradients: a block owns 64 queries and walks the key tiles they see: S = Q K^T,
//    dP = dO V^T, dQ += dS K.
// With dropout (dropout.h) dV takes z p and ds takes z dp, z the pair's regenerated factor.
// S and dP are computed twice (7 tile products per tile pair instead of flash-attention 2's 5, which
// adds dQ with atomics): the price of determinism by construction.
// Tiles: Bq = 64 queries at D = 64, 32 at D = 128, and the same for the key tile of the dQ kernel, so
// the float32 accumulators fit in registers. The walked tiles are double-buffered and loaded with
// cp.async: tile i + 1 is in flight while tile i is multiplied (one barrier per tile).
// Memory: shared tiles only (55 KiB at D = 64, 69 KiB at D = 128); never N x N.
#pragma once

#include <cmath>

#include "../dropout.h"
#include "../key_lengths.h"
#include "mma.cuh"

namespace actattn {
namespace cuda {
namespace quadratic_backward_tc {

constexpr int kWarps = 4;
constexpr int kThreads = kWarps * kWarp;
constexpr int kBlockRows = 16 * kWarps;  // rows (keys, or queries) a block owns

// Rows of the tiles a block walks through.
template <int kD>
constexpr int walk_tile() {
  return kD == 64 ? 64 : 32;
}

// The block's own two tiles, and two buffers of the two walked tiles (and of two per-row vectors) so that
// the next one is in flight while the current one is used.
template <int kD>
constexpr int shared_bytes() {
  return (2 * kBlockRows + 2 * 2 * walk_tile<kD>()) * (kD + 8) * 2 + 2 * 2 * walk_tile<kD>() * 4;
}

// Dropped weight z p and dL/ds of one pair (z its dropout factor), 0 for pairs that do not take part
// (causal, padding, past the end).
template <typename Activation>
__device__ __forceinline__ void pair_grads(const Activation& act, bool visible, float score, float dp, float keep,
                                           float lse, float delta, float* prob, float* ds) {
  const float pr = act.prob(score, lse);
  *prob = visible ? pr * keep : 0.f;
  *ds = visible ? act.dscore(score, pr, dp * keep, delta) : 0.f;
}

// Row `row` of a gradient (this thread's half of its accumulator tiles), times alpha, if it exists.
template <typename T, int N>
__device__ __forceinline__ void store_row(const RowView& view, int64_t b, int64_t h, int64_t row, int64_t rows_end,
                                          const mma::FragC (&tiles)[N], int half, float alpha, int t) {
  if (row >= rows_end) return;
  T* dst = row_ptr<T>(view, b, h, row);
#pragma unroll
  for (int n = 0; n < N; ++n) {
    *reinterpret_cast<uint32_t*>(dst + n * 8 + 2 * t) =
        mma::pack<T>(alpha * tiles[n].x[2 * half], alpha * tiles[n].x[2 * half + 1]);
  }
}

template <typename T, typename Activation, bool kBanded, int kD>
__global__ void __launch_bounds__(kThreads) key_grads_kernel(const QuadraticParams p, Activation act) {
  constexpr int kLd = kD + 8, kSteps = kD / 16, kQueries = walk_tile<kD>();
  constexpr int kPairTiles = kQueries / 8, kGradTiles = kD / 8;
  T* k_tile = dynamic_shared<T>();
  T* v_tile = k_tile + kBlockRows * kLd;
  // Buffer n of the walked tiles: q at q_tiles + n kQueries kLd, dO after the two q buffers, and so on
  // (offsets, not arrays of pointers, which a run-time index would put in local memory).
  T* q_tiles = v_tile + kBlockRows * kLd;
  T* dout_tiles = q_tiles + 2 * kQueries * kLd;
  float* lse_tiles = reinterpret_cast<float*>(dout_tiles + 2 * kQueries * kLd);
  float* delta_tiles = lse_tiles + 2 * kQueries;

  const AttentionShape s = p.shape;
  const int64_t bh = blockIdx.x, b = bh / s.heads, h = bh % s.heads;
  const int64_t k0 = int64_t(blockIdx.y) * kBlockRows;
  const int warp = threadIdx.x / kWarp, lane = threadIdx.x % kWarp, g = lane / 4, t = lane % 4;
  const int64_t keys = keys_of(p.key_lengths, b, s.k_len);
  const KeyBand band = key_band(p, keys);  // banded: query i sees keys [band.begin(i), band.end(i))
  const SequenceConstants<float> constants = sequence_constants<float>(p, b);
  act.inv_divisor = constants.inv_divisor;
  const float scale = static_cast<float>(p.scale);
  const int64_t key_rows[2] = {k0 + warp * 16 + g, k0 + warp * 16 + g + 8};
  const Dropout<float> dropout = Dropout<float>::of(p);
  const float* lse = static_cast<const float*>(p.log_sum_exp.data);
  const float* delta = static_cast<const float*>(p.delta.data);

  // Starts loading query tile i0 (and its rows' statistics) into buffer `buffer`.
  const auto load_query_tile = [&](int buffer, int64_t i0) {
    mma::load_tile_async<T, kQueries, kD, kThreads>(q_tiles + buffer * kQueries * kLd, kLd, p.q, b, h, i0, s.q_len);
    mma::load_tile_async<T, kQueries, kD, kThreads>(dout_tiles + buffer * kQueries * kLd, kLd, p.grad_out, b, h, i0,
                                                    s.q_len);
    if constexpr (Activation::kNormalizesRows) {
      mma::load_floats_async<kQueries, kThreads>(lse_tiles + buffer * kQueries, lse + bh * s.q_len, i0, s.q_len);
      mma::load_floats_async<kQueries, kThreads>(delta_tiles + buffer * kQueries, delta + bh * s.q_len, i0, s.q_len);
    }
  };
  if constexpr (!Activation::kNormalizesRows) {  // unused by these activations, but never uninitialised
    for (int idx = threadIdx.x; idx < 2 * kQueries; idx += kThreads) lse_tiles[idx] = delta_tiles[idx] = 0.f;
  }
  const T* warp_k = k_tile + warp * 16 * kLd;
  const T* warp_v = v_tile + warp * 16 * kLd;

  mma::FragC grad_k[kGradTiles], grad_v[kGradTiles];
  mma::zero(grad_k);
  mma::zero(grad_v);

  // Padding keys (k0 >= keys) take no part: their gradients stay zero.
  // Banded: from the first query that sees key k0 to the last that sees the block's last key.
  const int64_t row_end =
      kBanded && k0 < keys ? band.query_end(min(k0 + kBlockRows, keys) - 1, s.q_len) : s.q_len;
  const int64_t row_begin = kBanded ? band.first_query(k0, s.q_len) : 0;
  if (k0 < keys && row_begin < row_end) {
    mma::load_tile_async<T, kBlockRows, kD, kThreads>(k_tile, kLd, p.k, b, h, k0, keys);
    mma::load_tile_async<T, kBlockRows, kD, kThreads>(v_tile, kLd, p.v, b, h, k0, keys);
    load_query_tile(0, row_begin);
  }
  int buffer = 0;
  for (int64_t i0 = row_begin; k0 < keys && i0 < row_end; i0 += kQueries, buffer ^= 1) {
    mma::cp_async_wait_all();  // this thread's part of query tile i0 (and, the first time, of K and V)
    __syncthreads();           // everyone's part; every warp is done with the other buffer's tile
    if (i0 + kQueries < row_end) load_query_tile(buffer ^ 1, i0 + kQueries);  // in flight during this tile
    const T* q_tile = q_tiles + buffer * kQueries * kLd;
    const T* dout_tile = dout_tiles + buffer * kQueries * kLd;
    const float* lse_tile = lse_tiles + buffer * kQueries;
    const float* delta_tile = delta_tiles + buffer * kQueries;

    // Transposed products: rows are this warp's 16 keys, columns the tile's queries.
    mma::FragC prob[kPairTiles], dscore[kPairTiles];
    mma::zero(prob);
    mma::zero(dscore);
    mma::mma_shared_a_bt<T, kSteps>(prob, warp_k, kLd, q_tile, kLd, lane);
    mma::mma_shared_a_bt<T, kSteps>(dscore, warp_v, kLd, dout_tile, kLd, lane);
#pragma unroll
    for (int n = 0; n < kPairTiles; ++n) {
#pragma unroll
      for (int r = 0; r < 4; ++r) {
        const int column = n * 8 + 2 * t + (r & 1);
        const int64_t i = i0 + column, j = key_rows[r >> 1];
        const bool visible = i < s.q_len && j < keys && (!kBanded || band.sees(i, j));
        // The pair's queries are consecutive here, so each factor is its own draw.
        const float keep = dropout.multiplier(bh * s.q_len + i, j);
        pair_grads(act, visible, prob[n].x[r] * scale + constants.bias, dscore[n].x[r], keep, lse_tile[column],
                   delta_tile[column], &prob[n].x[r], &dscore[n].x[r]);
      }
    }
    mma::mma_p_b<T, kQueries / 16>(grad_v, prob, dout_tile, kLd, lane);
    mma::mma_p_b<T, kQueries / 16>(grad_k, dscore, q_tile, kLd, lane);
  }

#pragma unroll
  for (int half = 0; half < 2; ++half) {
    store_row<T>(p.grad_k, b, h, key_rows[half], s.k_len, grad_k, half, scale, t);
    store_row<T>(p.grad_v, b, h, key_rows[half], s.k_len, grad_v, half, 1.f, t);
  }
}

template <typename T, typename Activation, bool kBanded, int kD>
__global__ void __launch_bounds__(kThreads) query_grads_kernel(const QuadraticParams p, Activation act) {
  constexpr int kLd = kD + 8, kSteps = kD / 16, kKeys = walk_tile<kD>();
  constexpr int kPairTiles = kKeys / 8, kGradTiles = kD / 8;
  T* q_tile = dynamic_shared<T>();
  T* dout_tile = q_tile + kBlockRows * kLd;
  T* k_tiles = dout_tile + kBlockRows * kLd;  // buffer n at k_tiles + n kKeys kLd, then the V buffers
  T* v_tiles = k_tiles + 2 * kKeys * kLd;

  const AttentionShape s = p.shape;
  const int64_t bh = blockIdx.x, b = bh / s.heads, h = bh % s.heads;
  // Banded (causal): the last query blocks, which see the most keys, start first (as in the forward;
  // the dK/dV kernel's longest blocks, the first keys, come first by themselves).
  const int64_t q0 = int64_t(kBanded ? gridDim.y - 1 - blockIdx.y : blockIdx.y) * kBlockRows;
  const int warp = threadIdx.x / kWarp, lane = threadIdx.x % kWarp, g = lane / 4, t = lane % 4;
  const int64_t keys = keys_of(p.key_lengths, b, s.k_len);
  const KeyBand band = key_band(p, keys);  // banded: query i sees keys [band.begin(i), band.end(i))
  const SequenceConstants<float> constants = sequence_constants<float>(p, b);
  act.inv_divisor = constants.inv_divisor;
  const float scale = static_cast<float>(p.scale);
  const int64_t rows[2] = {q0 + warp * 16 + g, q0 + warp * 16 + g + 8};
  const Dropout<float> dropout = Dropout<float>::of(p);
  float row_lse[2] = {0.f, 0.f}, row_delta[2] = {0.f, 0.f};
  if constexpr (Activation::kNormalizesRows) {
    for (int half = 0; half < 2; ++half) {
      if (rows[half] < s.q_len) {
        row_lse[half] = static_cast<const float*>(p.log_sum_exp.data)[bh * s.q_len + rows[half]];
        row_delta[half] = static_cast<const float*>(p.delta.data)[bh * s.q_len + rows[half]];
      }
    }
  }

  // Starts loading key tile k0 (keys and values) into buffer `buffer`.
  const auto load_key_tile = [&](int buffer, int64_t k0) {
    mma::load_tile_async<T, kKeys, kD, kThreads>(k_tiles + buffer * kKeys * kLd, kLd, p.k, b, h, k0, keys);
    mma::load_tile_async<T, kKeys, kD, kThreads>(v_tiles + buffer * kKeys * kLd, kLd, p.v, b, h, k0, keys);
  };
  const int64_t key_begin = kBanded ? band.begin(q0) / kKeys * kKeys : 0;
  const int64_t key_end = kBanded ? band.end(q0 + kBlockRows - 1) : keys;

  mma::load_tile_async<T, kBlockRows, kD, kThreads>(q_tile, kLd, p.q, b, h, q0, s.q_len);
  mma::load_tile_async<T, kBlockRows, kD, kThreads>(dout_tile, kLd, p.grad_out, b, h, q0, s.q_len);
  if (key_begin < key_end) load_key_tile(0, key_begin);
  mma::cp_async_wait_all();
  __syncthreads();
  mma::FragA q_frag[kSteps], dout_frag[kSteps];
#pragma unroll
  for (int ks = 0; ks < kSteps; ++ks) {
    q_frag[ks] = mma::load_a(q_tile + warp * 16 * kLd + ks * 16, kLd, lane);
    dout_frag[ks] = mma::load_a(dout_tile + warp * 16 * kLd + ks * 16, kLd, lane);
  }

  mma::FragC grad_q[kGradTiles];
  mma::zero(grad_q);
  int buffer = 0;
  for (int64_t k0 = key_begin; k0 < key_end; k0 += kKeys, buffer ^= 1) {
    mma::cp_async_wait_all();  // this thread's part of key tile k0 (already there the first time)
    __syncthreads();           // everyone's part; every warp is done with the other buffer's tile
    if (k0 + kKeys < key_end) load_key_tile(buffer ^ 1, k0 + kKeys);  // in flight during this tile
    const T* k_tile = k_tiles + buffer * kKeys * kLd;
    const T* v_tile = v_tiles + buffer * kKeys * kLd;

    mma::FragC prob[kPairTiles], dscore[kPairTiles];
    mma::zero(prob);
    mma::zero(dscore);
    mma::mma_a_bt<T>(prob, q_frag, k_tile, kLd, lane);
    mma::mma_a_bt<T>(dscore, dout_frag, v_tile, kLd, lane);
#pragma unroll
    for (int n = 0; n < kPairTiles; ++n) {
      float keep[4];  // the thread's two keys of each of its two rows: one draw per row
      dropout.pair_multipliers(bh * s.q_len + rows[0], k0 + n * 8 + 2 * t, &keep[0], &keep[1]);
      dropout.pair_multipliers(bh * s.q_len + rows[1], k0 + n * 8 + 2 * t, &keep[2], &keep[3]);
#pragma unroll
      for (int r = 0; r < 4; ++r) {
        const int half = r >> 1;
        const int64_t i = rows[half], j = k0 + n * 8 + 2 * t + (r & 1);
        const bool visible = i < s.q_len && j < keys && (!kBanded || band.sees(i, j));
        pair_grads(act, visible, prob[n].x[r] * scale + constants.bias, dscore[n].x[r], keep[r], row_lse[half],
                   row_delta[half], &prob[n].x[r], &dscore[n].x[r]);
      }
    }
    mma::mma_p_b<T, kKeys / 16>(grad_q, dscore, k_tile, kLd, lane);
  }

#pragma unroll
  for (int half = 0; half < 2; ++half) {
    store_row<T>(p.grad_q, b, h, rows[half], s.q_len, grad_q, half, scale, t);
  }
}

}  // namespace quadratic_backward_tc
}  // namespace cuda
}  // namespace actattn
