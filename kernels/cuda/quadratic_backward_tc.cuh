// Quadratic attention backward on tensor cores (float16 / bfloat16, sm_80+; head dims Dk = Dv = 32, 64, 96,
// 128 or 256, and (Dk, Dv) = (192, 128), multi-head latent attention's), by recomputation of the scores
// tile by tile:
//   s_ij = scale q_i.k_j + bias, p_ij = prob(s_ij), dp_ij = dO_i.v_j, ds_ij = dscore(s_ij, p_ij, dp_ij, delta_i)
//   dV = P^T dO,  dK = scale dS^T Q,  dQ = scale dS K
// (softmax: p_ij = exp(s_ij - lse_i) from the forward's log-sum-exp, delta_i = dO_i.O_i written beforehand
// by the generic delta kernel).
//
// Two kernels, each owning what it writes, so gradients are bit-identical run to run (no atomics):
//  - key gradients: a block owns 64 keys (16 at D = 256) and walks the query tiles that see them. Its warps
//    form four row groups of 16 keys (one at D = 256) times one column group (D <= 96), two (D = 128 and
//    (192, 128)) or four (D = 256). Per tile each warp forms S^T = K Q^T and
//    dP^T = V dO^T for its 16 keys and its column group's share of the tile's queries (mma.sync), turns
//    them into P^T and dS^T, and adds P^T dO and dS^T Q to the columns of dV, dK it owns (float32).
//    With one column group P^T and dS^T stay in registers; with two or four each warp holds a 16 x 32
//    or 16 x 16 share of them, so they pass through shared memory (one more barrier per tile). Splitting
//    the columns is what keeps D >= 128 out of local memory: one warp owning all 128 columns of dK and
//    of dV held 128 float32 accumulators per thread, and spilled (FlashAttention-2 splits its dK, dV
//    the same way). At D = 256 the walked tiles (64 queries of Q and dO, double-buffered: 132 KiB)
//    leave room for one row group's K and V only within A100's 163 KiB.
//  - query gradients: a block of 4 warps owns 64 queries and walks the key tiles they see: S = Q K^T,
//    dP = dO V^T, dQ += dS K. Up to D = 128 each warp keeps its Q and dO rows in registers as mma
//    fragments; beyond (dQ's 16 x 256 accumulator alone takes 128 registers at D = 256) it reads them
//    from shared memory at each k-step, and walks key tiles of 16 at D = 256, 32 at (192, 128).
// With dropout (dropout.h) dV takes z p and ds takes z dp, z the pair's regenerated factor (one Philox
// draw per four pairs, shared by the lanes that hold them: dropout_fragments.cuh).
// S and dP are computed twice (7 tile products per tile pair instead of flash-attention 2's 5, which
// adds dQ with atomics): the price of determinism by construction.
// Tiles: the dK/dV kernel walks query tiles of 64 at D <= 64 and with column groups (whose warps share
// the tile's scores), 32 at D = 96; the dQ kernel key tiles of 64 at D <= 64, 32 at D = 96, 128 and
// (192, 128), 16 at 256; so the float32 accumulators fit in registers. The walked tiles are
// double-buffered and loaded with cp.async: tile i + 1 is in flight while tile i is multiplied (one barrier per tile, two with the
// shared P^T), except in the D = 256 dK/dV kernel's compact tiles (below: one buffer, loaded after use).
// Memory: shared tiles only (dK/dV kernel 31, 55, 52.5, 121 and 154 KiB at D = 32, 64, 96, 128, 256 and
// 145 KiB at (192, 128), and in the compact tiles of GPUs granting 99 KiB (sm_86 / 89) 78.5 KiB at
// D = 128, 87.5 KiB at D = 256, 94.5 KiB at (192, 128); dQ kernel 30, 54, 52, 68, 99 and 84 KiB), so
// every sm_80+ GPU takes this backward at every tiled head dim; never N x N.
// Tiles of Q and K have rows of Dk elements, tiles of V and dO rows of Dv (each padded by 8).
#pragma once

#include <cmath>

#include "../dropout.h"
#include "../key_lengths.h"
#include "dropout_fragments.cuh"
#include "mma.cuh"

namespace actattn {
namespace cuda {
namespace quadratic_backward_tc {

constexpr int kWarps = 4;                // of the dQ kernel
constexpr int kThreads = kWarps * kWarp;  // of the dQ kernel
constexpr int kMinBlocks = 2;             // of the dQ kernel, as the forward's (quadratic_forward_tc.cuh)
constexpr int kBlockRows = 16 * kWarps;   // queries a dQ block owns

// Rows of the key tiles the dQ kernel walks (and of the query tiles the dK/dV kernel walks with one
// column group).
template <int kDk, int kDv>
constexpr int walk_tile() {
  constexpr int kWidest = kDk > kDv ? kDk : kDv;
  return kWidest <= 64 ? 64 : kWidest <= 192 ? 32 : 16;
}

// The dQ kernel keeps its Q and dO rows in registers as mma fragments (Dk / 16 and Dv / 16 of them, 4
// registers apiece) up to D = 128.
template <int kDk, int kDv>
constexpr bool query_fragments_in_registers() {
  return kDk <= 128 && kDv <= 128;
}

// The dK/dV kernel's row groups of 16 keys, and the keys a block owns: one group at D = 256, where the
// walked tiles leave no shared memory for more keys.
template <int kDk, int kDv>
constexpr int key_grads_row_groups() {
  return kDk + kDv <= 320 ? 4 : 1;
}

template <int kDk, int kDv>
constexpr int key_grads_block_rows() {
  return 16 * key_grads_row_groups<kDk, kDv>();
}

// The dK/dV kernel's column groups and threads: the fewest groups (1, 2 or 4) that leave a warp at most
// 192 gradient columns of dK and dV together (96 float32 accumulators per thread).
template <int kDk, int kDv>
constexpr int key_grads_column_groups() {
  return kDk + kDv <= 192 ? 1 : kDk + kDv <= 384 ? 2 : 4;
}

template <int kDk, int kDv>
constexpr int key_grads_threads() {
  return key_grads_row_groups<kDk, kDv>() * key_grads_column_groups<kDk, kDv>() * kWarp;
}

// Blocks of 4 warps ask for 2 per SM, as the forward's do (quadratic_forward_tc.cuh says why); 8 warps
// for none: 2 blocks of 256 threads would cap them at 128 registers, where they spill.
template <int kDk, int kDv>
constexpr int key_grads_min_blocks() {
  return key_grads_threads<kDk, kDv>() <= 4 * kWarp ? 2 : 1;
}

// The query tiles the dK/dV kernel walks: their rows and how many buffers of them (2: the next tile in
// flight while the current one is used; 1: the next loaded after it). With two column groups (D = 128)
// 64 rows where the GPU grants the block its 121 KiB of shared memory (sm_80, sm_90): each warp forms a
// 16 x 32 share of S^T and dP^T, as each dQ warp forms 16 x 32, and the exchange's barriers come once
// per 64 queries. On an H200 the 32-query kernel took 2.3x the dQ kernel's time for 4/3 of its
// products. Its registers (172 per thread) already allowed only one block of 8 warps per SM, which the
// larger tile's shared memory keeps.
// kCompact: the tiles of GPUs granting a block 99 KiB (sm_86 / 89, sm_120), where the above does not
// fit: 32 rows at D = 128 and (192, 128); at D = 256 the same 64 rows in one buffer (87.5 KiB instead of
// 154: the loads no longer overlap the products; smaller tiles would make the warps' shares of the
// scores narrower than the 16 columns mma_shared_a_bt forms at a time). Head dims with one column group
// fit everywhere and have no compact tiles. Either way each gradient sees the same products in the same
// order (tiles start at the same query and are multiplied 16 queries at a time), so the gradients are
// the same bits.
template <int kDk, int kDv, bool kCompact = false>
constexpr int key_grads_walk_tile() {
  if (key_grads_column_groups<kDk, kDv>() == 1) return walk_tile<kDk, kDv>();
  return kCompact && key_grads_row_groups<kDk, kDv>() > 1 ? 32 : 64;
}

template <int kDk, int kDv, bool kCompact = false>
constexpr int key_grads_walk_buffers() {
  return kCompact && key_grads_row_groups<kDk, kDv>() == 1 ? 1 : 2;
}

template <int kDk, int kDv>
constexpr bool key_grads_has_compact_tiles() {
  return key_grads_column_groups<kDk, kDv>() > 1;
}

// Leading dimension of the dK/dV kernel's shared P^T and dS^T tiles (keys x walked queries).
template <int kWalk>
constexpr int pair_tile_ld() {
  return kWalk + 8;
}

// Bytes of `rows` shared rows of each of two tiles, one of Q or K (Dk wide) and one of dO or V (Dv wide):
// every tile of these kernels comes with its partner (padded by 8 elements against bank conflicts).
template <int kDk, int kDv>
constexpr int paired_rows_bytes(int rows) {
  return rows * (kDk + 8 + kDv + 8) * 2;
}

// The dQ kernel's own Q and dO tiles and two buffers of K and V tiles, so that the next is in flight
// while the current one is used.
template <int kDk, int kDv>
constexpr int query_grads_shared_bytes() {
  return paired_rows_bytes<kDk, kDv>(kBlockRows + 2 * walk_tile<kDk, kDv>());
}

// The dK/dV kernel's own K and V tiles, its buffers of the walked Q and dO tiles and of their rows'
// log-sum-exp and delta, and P^T and dS^T when they pass through shared memory (more than one column
// group).
template <int kDk, int kDv, bool kCompact = false>
constexpr int key_grads_walked_tiles_bytes() {
  constexpr int kWalked =
      key_grads_walk_buffers<kDk, kDv, kCompact>() * key_grads_walk_tile<kDk, kDv, kCompact>();
  return paired_rows_bytes<kDk, kDv>(key_grads_block_rows<kDk, kDv>() + kWalked) + 2 * kWalked * 4;
}

template <int kDk, int kDv, bool kCompact = false>
constexpr int key_grads_shared_bytes() {
  constexpr int kKeys = key_grads_block_rows<kDk, kDv>();
  return key_grads_walked_tiles_bytes<kDk, kDv, kCompact>() +
         (key_grads_column_groups<kDk, kDv>() > 1
              ? 2 * kKeys * pair_tile_ld<key_grads_walk_tile<kDk, kDv, kCompact>()>() * 2
              : 0);
}

// The least shared memory the backward's two kernels need on some GPU (the dK/dV kernel's compact tiles
// where it has them): what a GPU must grant a block for this backward to take the tensor cores. 99 KiB
// at D = 256 (the dQ kernel, exactly what sm_86 / 89 grant).
template <int kDk, int kDv>
constexpr int least_shared_bytes() {
  const int key_grads = key_grads_shared_bytes<kDk, kDv, key_grads_has_compact_tiles<kDk, kDv>()>();
  return key_grads > query_grads_shared_bytes<kDk, kDv>() ? key_grads : query_grads_shared_bytes<kDk, kDv>();
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

// Columns [column0, column0 + 8 N) of row `row` of a gradient (this thread's half of its accumulator
// tiles), times alpha, if the row exists.
template <typename T, int N>
__device__ __forceinline__ void store_row(const RowView& view, int64_t b, int64_t h, int64_t row, int64_t rows_end,
                                          int column0, const mma::FragC (&tiles)[N], int half, float alpha, int t) {
  if (row >= rows_end) return;
  T* dst = row_ptr<T>(view, b, h, row) + column0;
#pragma unroll
  for (int n = 0; n < N; ++n) {
    *reinterpret_cast<uint32_t*>(dst + n * 8 + 2 * t) =
        mma::pack<T>(alpha * tiles[n].x[2 * half], alpha * tiles[n].x[2 * half + 1]);
  }
}

template <typename T, typename Activation, bool kBanded, int kDk, int kDv, bool kCompact = false>
__global__ void __launch_bounds__(key_grads_threads<kDk, kDv>(), key_grads_min_blocks<kDk, kDv>())
    key_grads_kernel(const QuadraticParams p, Activation act) {
  constexpr int kLd = kDk + 8, kLdV = kDv + 8;  // rows of the Q and K tiles, of the dO and V tiles
  constexpr int kQueries = key_grads_walk_tile<kDk, kDv, kCompact>();
  constexpr int kBuffers = key_grads_walk_buffers<kDk, kDv, kCompact>();
  constexpr int kGroups = key_grads_column_groups<kDk, kDv>(), kBlockThreads = key_grads_threads<kDk, kDv>();
  constexpr int kRowGroups = key_grads_row_groups<kDk, kDv>(), kKeys = key_grads_block_rows<kDk, kDv>();
  static_assert(kDk % (8 * kGroups) == 0 && kDv % (8 * kGroups) == 0, "column groups of whole 8-column tiles");
  // A warp's share of a walked tile's queries (S^T, dP^T columns) and of the gradient columns of dK and dV.
  constexpr int kWarpQueries = kQueries / kGroups, kWarpColumns = kDk / kGroups, kWarpValueColumns = kDv / kGroups;
  constexpr int kPairTiles = kWarpQueries / 8, kPairLd = pair_tile_ld<kQueries>();
  T* k_tile = dynamic_shared<T>();
  T* v_tile = k_tile + kKeys * kLd;
  // Buffer n of the walked tiles: q at q_tiles + n kQueries kLd, dO after the q buffers, and so on
  // (offsets, not arrays of pointers, which a run-time index would put in local memory).
  T* q_tiles = v_tile + kKeys * kLdV;
  T* dout_tiles = q_tiles + kBuffers * kQueries * kLd;
  float* lse_tiles = reinterpret_cast<float*>(dout_tiles + kBuffers * kQueries * kLdV);
  float* delta_tiles = lse_tiles + kBuffers * kQueries;
  // P^T and dS^T of the current tile (keys x queries), when they pass through shared memory.
  static_assert(key_grads_walked_tiles_bytes<kDk, kDv, kCompact>() % 16 == 0,
                "ldmatrix reads 16-byte aligned rows of P^T");
  T* prob_tile = reinterpret_cast<T*>(delta_tiles + kBuffers * kQueries);
  T* dscore_tile = prob_tile + kKeys * kPairLd;

  const AttentionShape s = p.shape;
  const int64_t bh = blockIdx.x, b = bh / s.heads, h = bh % s.heads;
  const int64_t k0 = int64_t(blockIdx.y) * kKeys;
  const int warp = threadIdx.x / kWarp, lane = threadIdx.x % kWarp, g = lane / 4, t = lane % 4;
  const int key_group = warp % kRowGroups, column_group = warp / kRowGroups;
  const int first_query = column_group * kWarpQueries, first_column = column_group * kWarpColumns,
            first_value_column = column_group * kWarpValueColumns;
  const int64_t keys = keys_of(p.key_lengths, b, s.k_len);
  const KeyBand band = key_band(p, keys);  // banded: query i sees keys [band.begin(i), band.end(i))
  const SequenceConstants<float> constants = sequence_constants<float>(p, b);
  act.inv_divisor = constants.inv_divisor;
  const float scale = static_cast<float>(p.scale);
  const int64_t key_rows[2] = {k0 + key_group * 16 + g, k0 + key_group * 16 + g + 8};
  const Dropout<float> dropout = Dropout<float>::of(p);
  const float* lse = static_cast<const float*>(p.log_sum_exp.data);
  const float* delta = static_cast<const float*>(p.delta.data);

  // Starts loading query tile i0 (and its rows' statistics) into buffer `buffer`.
  const auto load_query_tile = [&](int buffer, int64_t i0) {
    mma::load_tile_async<T, kQueries, kDk, kBlockThreads>(q_tiles + buffer * kQueries * kLd, kLd, p.q, b, h, i0,
                                                          s.q_len);
    mma::load_tile_async<T, kQueries, kDv, kBlockThreads>(dout_tiles + buffer * kQueries * kLdV, kLdV, p.grad_out, b,
                                                          h, i0, s.q_len);
    if constexpr (Activation::kNormalizesRows) {
      mma::load_floats_async<kQueries, kBlockThreads>(lse_tiles + buffer * kQueries, lse + bh * s.q_len, i0, s.q_len);
      mma::load_floats_async<kQueries, kBlockThreads>(delta_tiles + buffer * kQueries, delta + bh * s.q_len, i0,
                                                      s.q_len);
    }
  };
  if constexpr (!Activation::kNormalizesRows) {  // unused by these activations, but never uninitialised
    for (int idx = threadIdx.x; idx < kBuffers * kQueries; idx += kBlockThreads) lse_tiles[idx] = delta_tiles[idx] = 0.f;
  }
  const T* warp_k = k_tile + key_group * 16 * kLd;
  const T* warp_v = v_tile + key_group * 16 * kLdV;

  mma::FragC grad_k[kWarpColumns / 8], grad_v[kWarpValueColumns / 8];
  mma::zero(grad_k);
  mma::zero(grad_v);

  // Padding keys (k0 >= keys) take no part: their gradients stay zero.
  // Banded: from the first query that sees key k0 to the last that sees the block's last key.
  const int64_t row_end =
      kBanded && k0 < keys ? band.query_end(min(k0 + kKeys, keys) - 1, s.q_len) : s.q_len;
  const int64_t row_begin = kBanded ? band.first_query(k0, s.q_len) : 0;
  if (k0 < keys && row_begin < row_end) {
    mma::load_tile_async<T, kKeys, kDk, kBlockThreads>(k_tile, kLd, p.k, b, h, k0, keys);
    mma::load_tile_async<T, kKeys, kDv, kBlockThreads>(v_tile, kLdV, p.v, b, h, k0, keys);
    load_query_tile(0, row_begin);
  }
  int buffer = 0;
  for (int64_t i0 = row_begin; k0 < keys && i0 < row_end; i0 += kQueries, buffer ^= kBuffers - 1) {
    mma::cp_async_wait_all();  // this thread's part of query tile i0 (and, the first time, of K and V)
    __syncthreads();           // everyone's part; every warp is done with the other buffer's tile (and P^T)
    const bool more = i0 + kQueries < row_end;
    if (kBuffers == 2 && more) load_query_tile(buffer ^ 1, i0 + kQueries);  // in flight during this tile
    const T* q_tile = q_tiles + buffer * kQueries * kLd;
    const T* dout_tile = dout_tiles + buffer * kQueries * kLdV;
    const float* lse_tile = lse_tiles + buffer * kQueries;
    const float* delta_tile = delta_tiles + buffer * kQueries;

    // Transposed products: rows are this warp's 16 keys, columns its share of the tile's queries.
    mma::FragC prob[kPairTiles], dscore[kPairTiles];
    mma::zero(prob);
    mma::zero(dscore);
    mma::mma_shared_a_bt<T, kDk / 16>(prob, warp_k, kLd, q_tile + first_query * kLd, kLd, lane);
    mma::mma_shared_a_bt<T, kDv / 16>(dscore, warp_v, kLdV, dout_tile + first_query * kLdV, kLdV, lane);
#pragma unroll
    for (int n = 0; n < kPairTiles; ++n) {
      float keep[4] = {1.f, 1.f, 1.f, 1.f};  // the thread's two queries of each of its two keys
      if (dropout.active) {
        dropout_fragments::key_major_factors(dropout, bh * s.q_len + i0 + first_query + n * 8 + 2 * t, key_rows, g,
                                             keep);
      }
#pragma unroll
      for (int r = 0; r < 4; ++r) {
        const int column = first_query + n * 8 + 2 * t + (r & 1);
        const int64_t i = i0 + column, j = key_rows[r >> 1];
        const bool visible = i < s.q_len && j < keys && (!kBanded || band.sees(i, j));
        pair_grads(act, visible, prob[n].x[r] * scale + constants.bias, dscore[n].x[r], keep[r], lse_tile[column],
                   delta_tile[column], &prob[n].x[r], &dscore[n].x[r]);
      }
    }
    if constexpr (kGroups == 1) {
      mma::mma_p_b<T, kQueries / 16>(grad_v, prob, dout_tile, kLdV, lane);
      mma::mma_p_b<T, kQueries / 16>(grad_k, dscore, q_tile, kLd, lane);
    } else {
      // Every warp needs its 16 keys' P^T and dS^T over all the tile's queries: the column groups
      // exchange their shares through shared memory.
#pragma unroll
      for (int n = 0; n < kPairTiles; ++n) {
#pragma unroll
        for (int half = 0; half < 2; ++half) {
          const int at = (key_group * 16 + g + 8 * half) * kPairLd + first_query + n * 8 + 2 * t;
          *reinterpret_cast<uint32_t*>(prob_tile + at) = mma::pack<T>(prob[n].x[2 * half], prob[n].x[2 * half + 1]);
          *reinterpret_cast<uint32_t*>(dscore_tile + at) =
              mma::pack<T>(dscore[n].x[2 * half], dscore[n].x[2 * half + 1]);
        }
      }
      __syncthreads();  // every share written
      const int warp_rows = key_group * 16 * kPairLd;
      mma::mma_shared_a_b<T, kQueries / 16>(grad_v, prob_tile + warp_rows, kPairLd, dout_tile + first_value_column,
                                            kLdV, lane);
      mma::mma_shared_a_b<T, kQueries / 16>(grad_k, dscore_tile + warp_rows, kPairLd, q_tile + first_column, kLd,
                                            lane);
    }
    if (kBuffers == 1 && more) {
      __syncthreads();  // every warp is done with the one buffer
      load_query_tile(0, i0 + kQueries);
    }
  }

#pragma unroll
  for (int half = 0; half < 2; ++half) {
    store_row<T>(p.grad_k, b, h, key_rows[half], s.k_len, first_column, grad_k, half, scale, t);
    store_row<T>(p.grad_v, b, h, key_rows[half], s.k_len, first_value_column, grad_v, half, 1.f, t);
  }
}

template <typename T, typename Activation, bool kBanded, int kDk, int kDv>
__global__ void __launch_bounds__(kThreads, kMinBlocks) query_grads_kernel(const QuadraticParams p, Activation act) {
  constexpr int kLd = kDk + 8, kLdV = kDv + 8;  // rows of the Q and K tiles, of the dO and V tiles
  constexpr int kSteps = kDk / 16, kValueSteps = kDv / 16, kKeys = walk_tile<kDk, kDv>();
  constexpr int kPairTiles = kKeys / 8, kGradTiles = kDk / 8;
  T* q_tile = dynamic_shared<T>();
  T* dout_tile = q_tile + kBlockRows * kLd;
  T* k_tiles = dout_tile + kBlockRows * kLdV;  // buffer n at k_tiles + n kKeys kLd, then the V buffers
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
  const int64_t query_rows[2] = {bh * s.q_len + rows[0], bh * s.q_len + rows[1]};  // dropout's row ids
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
    mma::load_tile_async<T, kKeys, kDk, kThreads>(k_tiles + buffer * kKeys * kLd, kLd, p.k, b, h, k0, keys);
    mma::load_tile_async<T, kKeys, kDv, kThreads>(v_tiles + buffer * kKeys * kLdV, kLdV, p.v, b, h, k0, keys);
  };
  const int64_t key_begin = kBanded ? band.begin(q0) / kKeys * kKeys : 0;
  const int64_t key_end = kBanded ? band.end(q0 + kBlockRows - 1) : keys;

  mma::load_tile_async<T, kBlockRows, kDk, kThreads>(q_tile, kLd, p.q, b, h, q0, s.q_len);
  mma::load_tile_async<T, kBlockRows, kDv, kThreads>(dout_tile, kLdV, p.grad_out, b, h, q0, s.q_len);
  if (key_begin < key_end) load_key_tile(0, key_begin);
  mma::cp_async_wait_all();
  __syncthreads();
  constexpr bool kFragmentsInRegisters = query_fragments_in_registers<kDk, kDv>();
  const T* warp_queries = q_tile + warp * 16 * kLd;
  const T* warp_dout = dout_tile + warp * 16 * kLdV;
  // Unused (and removed by the compiler) when the rows are read from shared memory.
  mma::FragA q_frag[kFragmentsInRegisters ? kSteps : 1], dout_frag[kFragmentsInRegisters ? kValueSteps : 1];
  if constexpr (kFragmentsInRegisters) {
#pragma unroll
    for (int ks = 0; ks < kSteps; ++ks) q_frag[ks] = mma::load_a(warp_queries + ks * 16, kLd, lane);
#pragma unroll
    for (int ks = 0; ks < kValueSteps; ++ks) dout_frag[ks] = mma::load_a(warp_dout + ks * 16, kLdV, lane);
  }

  mma::FragC grad_q[kGradTiles];
  mma::zero(grad_q);
  int buffer = 0;
  for (int64_t k0 = key_begin; k0 < key_end; k0 += kKeys, buffer ^= 1) {
    mma::cp_async_wait_all();  // this thread's part of key tile k0 (already there the first time)
    __syncthreads();           // everyone's part; every warp is done with the other buffer's tile
    if (k0 + kKeys < key_end) load_key_tile(buffer ^ 1, k0 + kKeys);  // in flight during this tile
    const T* k_tile = k_tiles + buffer * kKeys * kLd;
    const T* v_tile = v_tiles + buffer * kKeys * kLdV;

    mma::FragC prob[kPairTiles], dscore[kPairTiles];
    mma::zero(prob);
    mma::zero(dscore);
    if constexpr (kFragmentsInRegisters) {
      mma::mma_a_bt<T>(prob, q_frag, k_tile, kLd, lane);
      mma::mma_a_bt<T>(dscore, dout_frag, v_tile, kLdV, lane);
    } else {
      // Two k-steps at a time, as the D = 256 forward (quadratic_forward_tc.cuh), whose loop spilled
      // unrolled whole: here 240-252 registers at D = 256, no spill. Where Dk != Dv one of the products
      // stops early (the conditions are constant at D = 256, whose code they leave as it was).
      constexpr int kWidestSteps = kSteps > kValueSteps ? kSteps : kValueSteps;
#pragma unroll 2
      for (int ks = 0; ks < kWidestSteps; ++ks) {
        if (ks < kSteps) {
          mma::mma_step_a_bt<T>(prob, mma::load_a(warp_queries + ks * 16, kLd, lane), k_tile + ks * 16, kLd, lane);
        }
        if (ks < kValueSteps) {
          mma::mma_step_a_bt<T>(dscore, mma::load_a(warp_dout + ks * 16, kLdV, lane), v_tile + ks * 16, kLdV,
                                lane);
        }
      }
    }
#pragma unroll
    for (int n = 0; n < kPairTiles; ++n) {
      float keep[4] = {1.f, 1.f, 1.f, 1.f};  // the thread's two keys of each of its two rows
      if (dropout.active) dropout_fragments::row_major_factors(dropout, query_rows, k0 + n * 8 + 2 * t, t, keep);
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
    store_row<T>(p.grad_q, b, h, rows[half], s.q_len, 0, grad_q, half, scale, t);
  }
}

}  // namespace quadratic_backward_tc
}  // namespace cuda
}  // namespace actattn
