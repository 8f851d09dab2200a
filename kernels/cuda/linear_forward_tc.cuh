// Linear attention forward on tensor cores (float16 / bfloat16, Dk = Dv = D in {64, 128}, sm_80+), the
// feature map fused: a = scale phi(q), b = phi(k), o_i = a_i S_i / (a_i . z_i + eps).
//
// Algorithm (chunked, one block of D / 16 warps per (batch, head); shape in linear_tc_common.cuh): the
// float32 state S (D x D) lives in the warps' accumulator fragments, z (D) in shared memory. Causal, per
// chunk of D positions:
//   num = A S + tril(A B^T) V,  den = A z + rowsum(tril(A B^T)) + eps,  then S += B^T V, z += B^T 1,
// with A, B, V and S (rounded to the input type) in shared memory and every product on mma.sync. The
// masked score block tril(A B^T) is made 16 keys at a time in registers and fed straight into the
// product with V; key blocks above the diagonal are skipped. Non-causal: S and z over every key first,
// then num = A S, den = A z + eps per query chunk. Padding keys are zero rows of B and V.
// Memory: shared A, B, V, S tiles (4 x D x (D + 8) elements: 36 KiB at D = 64, 136 KiB at D = 128);
// no per-position state, nothing in global memory but inputs and outputs.
// Saved for backward: the output and den (float32, when normalising); the final state is an output.
#pragma once

#include "linear_tc_common.cuh"

namespace actattn {
namespace cuda {
namespace linear_forward_tc {

template <int kD>
constexpr int shared_bytes() {
  using Sh = linear_tc::Shape<kD>;
  return 4 * Sh::kTileElems * 2 + 2 * kD * static_cast<int>(sizeof(float));
}

template <typename T, typename Map, bool kCausal, int kD>
__global__ void __launch_bounds__(linear_tc::Shape<kD>::kThreads) forward_kernel(const LinearParams p) {
  using Sh = linear_tc::Shape<kD>;
  constexpr int kLd = Sh::kLd, kChunk = Sh::kChunk, kTiles = Sh::kTiles, kSteps = Sh::kSteps;
  T* a_tile = dynamic_shared<T>();
  T* b_tile = a_tile + Sh::kTileElems;
  T* v_tile = b_tile + Sh::kTileElems;
  T* s_tile = v_tile + Sh::kTileElems;
  float* z = reinterpret_cast<float*>(s_tile + Sh::kTileElems);
  float* a_dot_z = z + kD;

  const AttentionShape s = p.shape;
  const int64_t bh = blockIdx.x, b = bh / s.heads, h = bh % s.heads;
  const int warp = threadIdx.x / kWarp, lane = threadIdx.x % kWarp, g = lane / 4, t = lane % 4;
  const int64_t keys = keys_of(p.key_lengths, b, s.k_len);
  const float scale = static_cast<float>(p.scale), eps = static_cast<float>(p.eps);

  mma::FragC state[kTiles];  // rows [16 warp, 16 warp + 16) of S
  linear_tc::load_state<kD>(state, p.initial_state ? static_cast<const float*>(p.initial_state) + bh * kD * kD
                                                   : nullptr, warp, lane);
  linear_tc::load_vector<kD>(z, p.initial_normalizer ? static_cast<const float*>(p.initial_normalizer) + bh * kD
                                                     : nullptr);

  // S += B^T V and z += B^T 1 for the chunk in b_tile / v_tile. z's readers are behind a barrier already.
  auto absorb_chunk = [&] {
    mma::mma_shared_a_b<T, kChunk / 16, kTiles, true>(state, b_tile + warp * 16, kLd, v_tile, kLd, lane);
    linear_tc::add_column_sums<T, kD>(z, b_tile, kLd, nullptr);
  };

  if constexpr (!kCausal) {
    for (int64_t k0 = 0; k0 < keys; k0 += kChunk) {
      __syncthreads();
      linear_tc::load_mapped_tile<T, Map, kChunk, kD>(b_tile, kLd, p.k, b, h, k0, keys, 1.f);
      mma::load_tile<T, kChunk, kD>(v_tile, kLd, p.v, b, h, k0, keys);
      __syncthreads();
      absorb_chunk();
    }
  }

  for (int64_t q0 = 0; q0 < s.q_len; q0 += kChunk) {
    __syncthreads();  // the previous chunk's tiles, z and S tile are read by every warp
    linear_tc::load_mapped_tile<T, Map, kChunk, kD>(a_tile, kLd, p.q, b, h, q0, s.q_len, scale);
    if constexpr (kCausal) {
      linear_tc::load_mapped_tile<T, Map, kChunk, kD>(b_tile, kLd, p.k, b, h, q0, keys, 1.f);
      mma::load_tile<T, kChunk, kD>(v_tile, kLd, p.v, b, h, q0, keys);
    }
    linear_tc::round_state_into<T, kD>(s_tile, kLd, state, warp, lane);
    __syncthreads();
    for (int r = threadIdx.x; r < kChunk; r += blockDim.x) {
      float dot = 0.f;
      for (int d = 0; d < kD; ++d) dot += to_acc<float>(a_tile[r * kLd + d]) * z[d];
      a_dot_z[r] = dot;
    }
    __syncthreads();

    const T* a_rows = a_tile + warp * 16 * kLd;
    mma::FragC num[kTiles];
    mma::zero(num);
    mma::mma_shared_a_b<T, kSteps, kTiles>(num, a_rows, kLd, s_tile, kLd, lane);
    float row_sum[2] = {0.f, 0.f};  // this thread's columns of tril(A B^T)
    if constexpr (kCausal) {
      for (int kb = 0; kb <= warp; ++kb) {  // 16-key blocks at or left of the diagonal
        mma::FragC w[2];
        mma::zero(w);
        mma::mma_shared_a_bt<T, kSteps>(w, a_rows, kLd, b_tile + kb * 16 * kLd, kLd, lane);
#pragma unroll
        for (int n = 0; n < 2; ++n) {
#pragma unroll
          for (int r = 0; r < 4; ++r) {
            const int key = n * 8 + 2 * t + (r & 1), row = g + 8 * (r >> 1);
            if (kb == warp && key > row) w[n].x[r] = 0.f;
            row_sum[r >> 1] += w[n].x[r];
          }
        }
        mma::mma_p_b<T, 1>(num, w, v_tile + kb * 16 * kLd, kLd, lane);
      }
    }

#pragma unroll
    for (int half = 0; half < 2; ++half) {
      const int r = warp * 16 + g + 8 * half;
      const int64_t i = q0 + r;
      float total = row_sum[half] + __shfl_xor_sync(0xffffffffu, row_sum[half], 1);
      total += __shfl_xor_sync(0xffffffffu, total, 2);
      const float den = a_dot_z[r] + total + eps;
      if (i >= s.q_len) continue;
      if (p.normalize && t == 0) static_cast<float*>(p.denominator.data)[bh * s.q_len + i] = den;
      const float out_scale = p.normalize ? 1.f / den : 1.f;
      T* out_row = row_ptr<T>(p.out, b, h, i);
#pragma unroll
      for (int n = 0; n < kTiles; ++n) {
        *reinterpret_cast<uint32_t*>(out_row + n * 8 + 2 * t) =
            mma::pack<T>(num[n].x[2 * half] * out_scale, num[n].x[2 * half + 1] * out_scale);
      }
    }
    if constexpr (kCausal) absorb_chunk();
  }

  linear_tc::store_state<kD>(state, static_cast<float*>(p.final_state) + bh * kD * kD, warp, lane);
  // Each thread stores the entries of z it summed itself (add_column_sums), so no barrier is needed.
  for (int d = threadIdx.x; d < kD; d += blockDim.x) static_cast<float*>(p.final_normalizer)[bh * kD + d] = z[d];
}

}  // namespace linear_forward_tc
}  // namespace cuda
}  // namespace actattn
