// Quadratic attention forward on tensor cores (float16 / bfloat16, sm_80+; head dims Dk = Dv = 32, 64, 96,
// 128 or 256, and (Dk, Dv) = (192, 128), the query-key and value head dims of multi-head latent
// attention, DeepSeek-V2's): O = act(scale * Q K^T + bias) V, flash-attention 2's schedule.
//
// Algorithm: a block of 4 warps owns 64 query rows of one (batch, head), 16 rows per warp, and walks the
// visible keys in tiles of 64 (32 beyond Dk = 128; causal: only tiles that start at or before the
// block's last row). Per tile,
// K and V are copied into shared memory with cp.async, each overlapping a product (V while the scores
// of the same tile are formed, the next K while P V runs: one buffer each, two barriers per tile, as
// flash-attention 2 does); each warp computes its 16 x 64 scores S = Q K^T with mma.sync
// (Q fragments stay in registers for the whole walk up to Dk = 128; beyond, Q is read from shared
// memory at each k-step and the key tile halves: at D = 256 the float32 16 x 256 accumulator alone
// takes 128 registers per thread), applies the activation in registers, rounds P to
// the input type and adds P V into a float32 16 x Dv accumulator, again in registers. Softmax keeps the
// running row max and sum (online softmax) and rescales the accumulator when the max grows; sigmoid and
// relu need no row statistics. Masked scores (causal, padding keys) become probability 0. Dropout
// (dropout.h) multiplies P by its factors after softmax's row sums took it (one Philox draw per four
// scores, shared by the two lanes that hold them: dropout_fragments.cuh).
// Memory: shared Q, K, V tiles (64 x (Dk + 8) elements for Q, key-tile x (Dk + 8) for K and x (Dv + 8)
// for V: 15, 27, 39, 51 and 66 KiB at D = 32, 64, 96, 128, 256, 46 KiB at (192, 128)); never N x N.
// Where the backward cannot take the tensor cores (rows it writes not 16-byte aligned, a GPU granting a
// block less than 99 KiB at D = 256), the generic backward kernels read this forward's output and
// log-sum-exp as their own.
// Saved for backward: the output and, for softmax, the row log-sum-exp (float32).
#pragma once

#include <cmath>

#include "../dropout.h"
#include "../key_lengths.h"
#include "dropout_fragments.cuh"
#include "mma.cuh"

namespace actattn {
namespace cuda {
namespace quadratic_forward_tc {

constexpr int kWarps = 4;
constexpr int kThreads = kWarps * kWarp;
constexpr int kBlockRows = 16 * kWarps;  // query rows per block

// Q stays in registers as mma fragments (Dk / 16 of them, 4 registers each) up to Dk = 128.
template <int kDk>
constexpr bool queries_in_registers() {
  return kDk <= 128;
}

// Keys per tile: 32 where Q is read from shared memory, so that the scores' 16 registers fit beside the
// accumulator (128 at D = 256; at (192, 128) 64-key tiles spilled 4-16 bytes, also with Q in registers).
template <int kDk>
constexpr int key_tile() {
  return queries_in_registers<kDk>() ? 64 : 32;
}

template <int kDk, int kDv>
constexpr int forward_shared_bytes() {
  return ((kBlockRows + key_tile<kDk>()) * (kDk + 8) + key_tile<kDk>() * (kDv + 8)) * 2;
}

// At least 2 blocks per SM (at most 255 registers): without a minimum ptxas squeezed kernels needing a
// little over 168 registers onto the 3-block step and spilled 4-8 bytes there (sm_80); with it they
// take 190-202 and nothing spills.
constexpr int kMinBlocks = 2;

template <typename T, typename Activation, bool kBanded, int kDk, int kDv>
__global__ void __launch_bounds__(kThreads, kMinBlocks) forward_kernel(const QuadraticParams p, Activation act) {
  // Padded rows (Q, K: kLd; V: kLdV): ldmatrix's 8 row addresses fall in distinct banks.
  constexpr int kLd = kDk + 8, kLdV = kDv + 8;
  constexpr int kKeyTile = key_tile<kDk>(), kSteps = kDk / 16, kScoreTiles = kKeyTile / 8, kOutTiles = kDv / 8;
  constexpr bool kQueriesInRegisters = queries_in_registers<kDk>();
  T* q_tile = dynamic_shared<T>();
  T* k_tile = q_tile + kBlockRows * kLd;
  T* v_tile = k_tile + kKeyTile * kLd;

  const AttentionShape s = p.shape;
  const int64_t bh = blockIdx.x, b = bh / s.heads, h = bh % s.heads;
  // Banded (causal): the query blocks that see the most keys, the last ones, start first, so that the
  // short ones fill the last wave instead of leaving a long one alone on it.
  const int64_t q0 = int64_t(kBanded ? gridDim.y - 1 - blockIdx.y : blockIdx.y) * kBlockRows;
  const int warp = threadIdx.x / kWarp, lane = threadIdx.x % kWarp, g = lane / 4, t = lane % 4;
  const int64_t keys = keys_of(p.key_lengths, b, s.k_len);
  const KeyBand band = key_band(p, keys);  // banded: row i sees keys [band.begin(i), band.end(i))
  const SequenceConstants<float> constants = sequence_constants<float>(p, b);
  if constexpr (!Activation::kNormalizesRows) act.inv_divisor = constants.inv_divisor;  // softmax has none
  // Softmax works in base 2 (scores times log2 e): each weight is then one ex2 of its difference to the
  // row max, where exp would multiply by log2 e first (FlashAttention's folding); the log-sum-exp
  // returns to natural units when it is stored. The other activations take natural units.
  constexpr float kLog2e = 1.4426950408889634f, kLn2 = 0.6931471805599453f;
  const float score_scale = static_cast<float>(p.scale) * (Activation::kNormalizesRows ? kLog2e : 1.f);
  const float score_bias = constants.bias * (Activation::kNormalizesRows ? kLog2e : 1.f);
  const Dropout<float> dropout = Dropout<float>::of(p);
  const int64_t warp_row0 = q0 + warp * 16;
  const int64_t rows[2] = {warp_row0 + g, warp_row0 + g + 8};  // this thread's rows (accumulator halves)

  const int64_t key_begin = kBanded ? band.begin(q0) / kKeyTile * kKeyTile : 0;
  const int64_t key_end = kBanded ? band.end(q0 + kBlockRows - 1) : keys;

  // The first K tile travels with Q; from then on each tile's load overlaps the previous product:
  // V(k0) while S = Q K(k0)^T and the activation run, K(k0 + kKeyTile) while P V(k0) runs.
  mma::load_tile_async<T, kBlockRows, kDk, kThreads>(q_tile, kLd, p.q, b, h, q0, s.q_len);
  if (key_begin < key_end) {
    mma::load_tile_async<T, kKeyTile, kDk, kThreads>(k_tile, kLd, p.k, b, h, key_begin, keys);
  }
  mma::cp_async_wait_all();
  __syncthreads();
  const T* warp_queries = q_tile + warp * 16 * kLd;
  mma::FragA q_frag[kQueriesInRegisters ? kSteps : 1];
  if constexpr (kQueriesInRegisters) {
#pragma unroll
    for (int ks = 0; ks < kSteps; ++ks) q_frag[ks] = mma::load_a(warp_queries + ks * 16, kLd, lane);
  }

  mma::FragC out[kOutTiles];
  mma::zero(out);
  constexpr float kNegInf = -INFINITY;
  float row_max[2] = {kNegInf, kNegInf}, row_sum[2] = {0.f, 0.f};  // row_sum: this thread's columns only

  for (int64_t k0 = key_begin; k0 < key_end; k0 += kKeyTile) {
    mma::cp_async_wait_all();  // this thread's part of K(k0)
    __syncthreads();           // everyone's part of K(k0); every warp is done with V(k0 - kKeyTile)
    mma::load_tile_async<T, kKeyTile, kDv, kThreads>(v_tile, kLdV, p.v, b, h, k0, keys);

    mma::FragC score[kScoreTiles];
    mma::zero(score);
    if constexpr (kQueriesInRegisters) {
      mma::mma_a_bt<T>(score, q_frag, k_tile, kLd, lane);
    } else {
      // Two k-steps at a time: unrolled whole, the non-banded softmax kernel at D = 256 spilled 48-60
      // bytes at 255 registers; so, 248-254 registers and no spill (the 16 x 256 accumulator takes 128
      // of them).
#pragma unroll 2
      for (int ks = 0; ks < kSteps; ++ks) {
        mma::mma_step_a_bt<T>(score, mma::load_a(warp_queries + ks * 16, kLd, lane), k_tile + ks * 16, kLd, lane);
      }
    }

    // Tiles wholly inside the sequence and inside every row's band need no mask; at (192, 128) every
    // tile takes the masked path (a compare per score), since the two paths side by side took the
    // non-causal softmax kernel to 255 registers and a 20-byte spill, one path alone to 212 and none.
    const bool masked_tile = kDk != kDv || k0 + kKeyTile > keys || (kBanded && (k0 + kKeyTile > band.end(warp_row0) ||
                                                                  k0 < band.begin(warp_row0 + 15)));
    float tile_max[2] = {kNegInf, kNegInf};
#pragma unroll
    for (int n = 0; n < kScoreTiles; ++n) {
#pragma unroll
      for (int r = 0; r < 4; ++r) {
        const int64_t j = k0 + n * 8 + 2 * t + (r & 1);
        const bool visible = !masked_tile || (j < keys && (!kBanded || band.sees(rows[r >> 1], j)));
        const float sc = score[n].x[r] * score_scale + score_bias;
        if constexpr (Activation::kNormalizesRows) {
          score[n].x[r] = visible ? sc : kNegInf;
          tile_max[r >> 1] = fmaxf(tile_max[r >> 1], score[n].x[r]);
        } else {
          score[n].x[r] = visible ? act.prob(sc, 0.f) : 0.f;
        }
      }
    }
    if constexpr (Activation::kNormalizesRows) {
#pragma unroll
      for (int half = 0; half < 2; ++half) {
        // The four threads of a quad hold the row's kKeyTile scores between them.
        float m = fmaxf(tile_max[half], __shfl_xor_sync(0xffffffffu, tile_max[half], 1));
        m = fmaxf(m, __shfl_xor_sync(0xffffffffu, m, 2));
        const float new_max = fmaxf(row_max[half], m);
        const float base = new_max == kNegInf ? 0.f : new_max;  // a row with no key yet: every p is 0
        const float correction = fast_exp2(row_max[half] - base);
        float sum = 0.f;
#pragma unroll
        for (int n = 0; n < kScoreTiles; ++n) {
#pragma unroll
          for (int c = 0; c < 2; ++c) {
            float& x = score[n].x[2 * half + c];
            x = fast_exp2(x - base);
            sum += x;
          }
        }
        row_sum[half] = row_sum[half] * correction + sum;
        row_max[half] = new_max;
#pragma unroll
        for (int n = 0; n < kOutTiles; ++n) {
          out[n].x[2 * half] *= correction;
          out[n].x[2 * half + 1] *= correction;
        }
      }
    }
    if (dropout.active) {
      const int64_t query_rows[2] = {bh * s.q_len + rows[0], bh * s.q_len + rows[1]};
#pragma unroll
      for (int n = 0; n < kScoreTiles; ++n) {
        float keep[4];
        dropout_fragments::row_major_factors(dropout, query_rows, k0 + n * 8 + 2 * t, t, keep);
#pragma unroll
        for (int r = 0; r < 4; ++r) score[n].x[r] *= keep[r];
      }
    }
    mma::cp_async_wait_all();  // this thread's part of V(k0)
    __syncthreads();           // everyone's part of V(k0); every warp is done with K(k0)
    if (k0 + kKeyTile < key_end) {
      mma::load_tile_async<T, kKeyTile, kDk, kThreads>(k_tile, kLd, p.k, b, h, k0 + kKeyTile, keys);
    }
    mma::mma_p_b<T, kKeyTile / 16>(out, score, v_tile, kLdV, lane);
  }

#pragma unroll
  for (int half = 0; half < 2; ++half) {
    const int64_t i = rows[half];
    float out_scale = 1.f;
    if constexpr (Activation::kNormalizesRows) {
      float total = row_sum[half] + __shfl_xor_sync(0xffffffffu, row_sum[half], 1);
      total += __shfl_xor_sync(0xffffffffu, total, 2);
      const bool any_key = total > 0.f;
      out_scale = any_key ? 1.f / total : 0.f;
      if (t == 0 && i < s.q_len) {
        static_cast<float*>(p.log_sum_exp.data)[bh * s.q_len + i] =
            any_key ? row_max[half] * kLn2 + logf(total) : kNegInf;
      }
    }
    if (i >= s.q_len) continue;
    T* out_row = row_ptr<T>(p.out, b, h, i);
#pragma unroll
    for (int n = 0; n < kOutTiles; ++n) {
      *reinterpret_cast<uint32_t*>(out_row + n * 8 + 2 * t) =
          mma::pack<T>(out[n].x[2 * half] * out_scale, out[n].x[2 * half + 1] * out_scale);
    }
  }
}

}  // namespace quadratic_forward_tc
}  // namespace cuda
}  // namespace actattn
