// Quadratic attention forward on CUDA: O = act(scale * Q K^T + bias) V, the generic path (float32,
// float64, any head dim, any alignment); float16 / bfloat16 calls at head dims 32, 64, 96, 128 go to the
// tensor-core kernel (quadratic_forward_tc.cu, chosen in tensor_core_paths.h).
//
// Algorithm: one warp per query row (kRowsPerBlock rows per block). The warp walks the visible keys
// 32 at a time, one key per lane: each lane computes its score against the row's q (held in shared
// memory), the warp applies the activation, and every lane accumulates p * v for the columns it owns
// (column e belongs to lane e % 32, up to kColsPerLane columns, so Dv <= 256). Softmax runs the online
// max/sum recurrence with warp reductions, never storing a row of probabilities. Dropout
// (dropout.h) multiplies each lane's weight by its factor after softmax's sum took it.
// Memory: q of each row in shared memory (kRowsPerBlock * 256 accumulation-type values), the output
// accumulator in registers; never N x N.
// Saved for backward: the output and, for softmax, the row log-sum-exp.
// This path favours obvious correctness over speed (no tensor cores, keys read per lane).
#include <cmath>
#include <limits>

#include "../dispatch.h"
#include "../dropout.h"
#include "../key_lengths.h"
#include "cuda_common.cuh"
#include "cuda_kernels.h"
#include "tensor_core_paths.h"

namespace actattn {
namespace {

using cuda::kWarp;
constexpr int kRowsPerBlock = 4;
constexpr int kColsPerLane = 8;  // 256 / 32

// At least 5 blocks per SM: up to 96 registers, which every instantiation fits without spilling (ptxas's
// own choice left the float32 sigmoid banded one at 96 with 8 bytes spilled on sm_90, and gave float64
// 128 registers, 4 blocks).
template <typename T, typename Acc, typename Activation, bool kBanded>
__global__ void __launch_bounds__(kRowsPerBlock * kWarp, 5)
    forward_kernel(const QuadraticParams p, Activation act) {
  __shared__ Acc q_shared[kRowsPerBlock][256];
  const AttentionShape s = p.shape;
  const int warp = threadIdx.x / kWarp, lane = threadIdx.x % kWarp;
  const int64_t row = int64_t(blockIdx.x) * kRowsPerBlock + warp;
  if (row >= s.batch * s.heads * s.q_len) return;  // whole warps leave together
  const int64_t i = row % s.q_len, bh = row / s.q_len, b = bh / s.heads, h = bh % s.heads;
  const int64_t keys = keys_of(p.key_lengths, b, s.k_len);
  const SequenceConstants<Acc> constants = sequence_constants<Acc>(p, b);
  if constexpr (!Activation::kNormalizesRows) act.inv_divisor = constants.inv_divisor;  // softmax has none
  const Dropout<Acc> dropout = Dropout<Acc>::of(p);

  Acc* q = q_shared[warp];
  const T* q_row = cuda::row_ptr<T>(p.q, b, h, i);
  for (int64_t d = lane; d < s.qk_dim; d += kWarp) q[d] = Acc(p.scale) * cuda::to_acc<Acc>(q_row[d]);
  __syncwarp();

  Acc acc[kColsPerLane];
#pragma unroll
  for (int c = 0; c < kColsPerLane; ++c) acc[c] = Acc(0);
  const Acc neg_inf = -std::numeric_limits<Acc>::infinity();
  Acc running_max = neg_inf, running_sum = Acc(0);

  const KeyBand band = key_band(p, keys);
  const int64_t visible = kBanded ? band.end(i) : keys;
  for (int64_t j0 = kBanded ? band.begin(i) : 0; j0 < visible; j0 += kWarp) {
    const int n = static_cast<int>(min(int64_t(kWarp), visible - j0));
    Acc score = neg_inf;
    if (lane < n) {
      const T* k = cuda::row_ptr<T>(p.k, b, h, j0 + lane);
      Acc dot = Acc(0);
      for (int64_t d = 0; d < s.qk_dim; ++d) dot += q[d] * cuda::to_acc<Acc>(k[d]);
      score = dot + constants.bias;
    }
    Acc prob;
    if constexpr (Activation::kNormalizesRows) {
      // Lane 0 always holds a key, so the tile max is finite for finite inputs.
      const Acc tile_max = max(running_max, cuda::warp_max(score));
      const Acc correction = exp(running_max - tile_max);  // 0 on the first tile
      prob = lane < n ? exp(score - tile_max) : Acc(0);
      running_sum = running_sum * correction + cuda::warp_sum(prob);
#pragma unroll
      for (int c = 0; c < kColsPerLane; ++c) acc[c] *= correction;
      running_max = tile_max;
    } else {
      prob = lane < n ? act.prob(score, Acc(0)) : Acc(0);
    }
    if (lane < n) prob *= dropout.multiplier(row, j0 + lane);
    for (int t = 0; t < n; ++t) {
      const Acc weight = __shfl_sync(0xffffffffu, prob, t);
      const T* v = cuda::row_ptr<T>(p.v, b, h, j0 + t);
#pragma unroll
      for (int c = 0; c < kColsPerLane; ++c) {
        const int64_t e = lane + c * kWarp;
        if (e < s.v_dim) acc[c] += weight * cuda::to_acc<Acc>(v[e]);
      }
    }
  }

  Acc out_scale = Acc(1);
  if constexpr (Activation::kNormalizesRows) {
    const bool any_key = running_sum > Acc(0);
    out_scale = any_key ? Acc(1) / running_sum : Acc(0);
    if (lane == 0) {
      static_cast<Acc*>(p.log_sum_exp.data)[row] = any_key ? running_max + log(running_sum) : neg_inf;
    }
  }
  T* out = cuda::row_ptr<T>(p.out, b, h, i);
#pragma unroll
  for (int c = 0; c < kColsPerLane; ++c) {
    const int64_t e = lane + c * kWarp;
    if (e < s.v_dim) out[e] = cuda::from_acc<T>(acc[c] * out_scale);
  }
}

}  // namespace

void quadratic_attention_forward_cuda(const QuadraticParams& params, cudaStream_t stream) {
  const int64_t rows = params.shape.batch * params.shape.heads * params.shape.q_len;
  if (rows == 0) return;
  if (cuda::quadratic_takes_tensor_cores(params, /*backward=*/false)) {
    return cuda::quadratic_forward_tensor_core(params, stream);
  }
  dispatch_dtype_cuda(params.dtype, [&](auto types) {
    using T = typename decltype(types)::scalar_t;
    using Acc = typename decltype(types)::acc_t;
    dispatch_score_activation<Acc>(params.activation, [&](auto activation) {
      dispatch_bool(params.banded(), [&](auto banded) {
        forward_kernel<T, Acc, decltype(activation), decltype(banded)::value>
            <<<cuda::blocks_for(rows, kRowsPerBlock), kRowsPerBlock * kWarp, 0, stream>>>(params, activation);
        cuda::check_launch("quadratic_attention_forward");
      });
    });
  });
}

}  // namespace actattn
