// Quadratic attention backward on CUDA, by recomputation: the generic path, and the delta kernel that
// the tensor-core path (quadratic_backward_tc.cu, float16 / bfloat16 at head dims 32, 64, 96, 128) shares.
//   s_ij = scale * q_i.k_j + bias, p_ij = prob(s_ij), dp_ij = dO_i.v_j, ds_ij = dscore(s_ij, p_ij, dp_ij, delta_i)
//   dV_j = sum_i p_ij dO_i,  dK_j = scale * sum_i ds_ij q_i,  dQ_i = scale * sum_j ds_ij k_j
// where, for softmax, p_ij = exp(s_ij - lse_i) and delta_i = dO_i . O_i (first kernel, into params.delta).
// With dropout (dropout.h) dV takes z_ij p_ij and ds_ij takes z_ij dp_ij, z_ij the regenerated factor.
//
// Three kernels, each owning what it writes (no atomics: gradients are bit-identical run to run):
// delta (one warp per query row, softmax only); dK and dV (one warp per key row, one query per lane,
// 32 queries at a time); dQ (one warp per query row, one key per lane). Lane e % 32 owns column e.
// Memory: delta (batch * heads * q_len) plus a row of shared memory per warp.
#include <cmath>

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

template <typename T, typename Acc>
__device__ __forceinline__ Acc dot_shared(const Acc* shared, const T* row, int64_t n) {
  Acc sum = Acc(0);
  for (int64_t d = 0; d < n; ++d) sum += shared[d] * cuda::to_acc<Acc>(row[d]);
  return sum;
}

// Row of dim values (times alpha) into this warp's shared buffer.
template <typename T, typename Acc>
__device__ __forceinline__ void load_shared(const T* row, int64_t dim, Acc alpha, Acc* shared, int lane) {
  for (int64_t d = lane; d < dim; d += kWarp) shared[d] = alpha * cuda::to_acc<Acc>(row[d]);
  __syncwarp();
}

// acc[c] += weight * row[lane + 32 c] for the columns this lane owns.
template <typename T, typename Acc>
__device__ __forceinline__ void accumulate_columns(Acc (&acc)[kColsPerLane], Acc weight, const T* row, int64_t dim,
                                                   int lane) {
#pragma unroll
  for (int c = 0; c < kColsPerLane; ++c) {
    const int64_t e = lane + c * kWarp;
    if (e < dim) acc[c] += weight * cuda::to_acc<Acc>(row[e]);
  }
}

template <typename T, typename Acc>
__device__ __forceinline__ void store_columns(const Acc (&acc)[kColsPerLane], Acc alpha, T* row, int64_t dim,
                                              int lane) {
#pragma unroll
  for (int c = 0; c < kColsPerLane; ++c) {
    const int64_t e = lane + c * kWarp;
    if (e < dim) row[e] = cuda::from_acc<T>(alpha * acc[c]);
  }
}

template <typename T, typename Acc>
__global__ void __launch_bounds__(kRowsPerBlock * kWarp) delta_kernel(const QuadraticParams p) {
  const AttentionShape s = p.shape;
  const int warp = threadIdx.x / kWarp, lane = threadIdx.x % kWarp;
  const int64_t row = int64_t(blockIdx.x) * kRowsPerBlock + warp;
  if (row >= s.batch * s.heads * s.q_len) return;
  const int64_t i = row % s.q_len, bh = row / s.q_len, b = bh / s.heads, h = bh % s.heads;
  const T* dout = cuda::row_ptr<T>(p.grad_out, b, h, i);
  const T* out = cuda::row_ptr<T>(p.out, b, h, i);
  Acc sum = Acc(0);
  for (int64_t e = lane; e < s.v_dim; e += kWarp) sum += cuda::to_acc<Acc>(dout[e]) * cuda::to_acc<Acc>(out[e]);
  sum = cuda::warp_sum(sum);
  if (lane == 0) static_cast<Acc*>(p.delta.data)[row] = sum;
}

// Dropped weight z p and dL/ds of one (query, key) pair, from its score, dp and dropout factor z.
template <typename Acc, typename Activation>
__device__ __forceinline__ void pair_grads(const QuadraticParams& p, const Activation& act, int64_t q_row, Acc score,
                                           Acc dp, Acc keep, Acc* prob, Acc* ds) {
  const Acc row_lse = Activation::kNormalizesRows ? static_cast<const Acc*>(p.log_sum_exp.data)[q_row] : Acc(0);
  const Acc row_delta = Activation::kNormalizesRows ? static_cast<const Acc*>(p.delta.data)[q_row] : Acc(0);
  const Acc undropped = act.prob(score, row_lse);
  *prob = undropped * keep;
  *ds = act.dscore(score, undropped, dp * keep, row_delta);
}

template <typename T, typename Acc, typename Activation, bool kBanded>
__global__ void __launch_bounds__(kRowsPerBlock * kWarp)
    key_grads_kernel(const QuadraticParams p, Activation act) {
  __shared__ Acc k_shared[kRowsPerBlock][256];
  __shared__ Acc v_shared[kRowsPerBlock][256];
  const AttentionShape s = p.shape;
  const int warp = threadIdx.x / kWarp, lane = threadIdx.x % kWarp;
  const int64_t row = int64_t(blockIdx.x) * kRowsPerBlock + warp;
  if (row >= s.batch * s.heads * s.k_len) return;
  const int64_t j = row % s.k_len, bh = row / s.k_len, b = bh / s.heads, h = bh % s.heads;
  const SequenceConstants<Acc> constants = sequence_constants<Acc>(p, b);
  act.inv_divisor = constants.inv_divisor;
  const int64_t keys = keys_of(p.key_lengths, b, s.k_len);
  const bool padding = j >= keys;  // a padding key gets zero gradients
  const Dropout<Acc> dropout = Dropout<Acc>::of(p);
  load_shared(cuda::row_ptr<T>(p.k, b, h, j), s.qk_dim, Acc(1), k_shared[warp], lane);
  load_shared(cuda::row_ptr<T>(p.v, b, h, j), s.v_dim, Acc(1), v_shared[warp], lane);
  const Acc scale = Acc(p.scale);

  Acc grad_k[kColsPerLane], grad_v[kColsPerLane];
#pragma unroll
  for (int c = 0; c < kColsPerLane; ++c) grad_k[c] = grad_v[c] = Acc(0);

  // Banded: the queries [first_query, query_end) see key j.
  const KeyBand band = key_band(p, keys);
  const int64_t first_row = kBanded ? band.first_query(j, s.q_len) : 0;
  const int64_t row_end = kBanded ? band.query_end(j, s.q_len) : s.q_len;
  for (int64_t i0 = first_row; !padding && i0 < row_end; i0 += kWarp) {
    const int n = static_cast<int>(min(int64_t(kWarp), row_end - i0));
    Acc prob = Acc(0), ds = Acc(0);
    if (lane < n) {
      const int64_t i = i0 + lane;
      const Acc score =
          scale * dot_shared(k_shared[warp], cuda::row_ptr<T>(p.q, b, h, i), s.qk_dim) + constants.bias;
      const Acc dp = dot_shared(v_shared[warp], cuda::row_ptr<T>(p.grad_out, b, h, i), s.v_dim);
      pair_grads(p, act, bh * s.q_len + i, score, dp, dropout.multiplier(bh * s.q_len + i, j), &prob, &ds);
    }
    for (int t = 0; t < n; ++t) {
      accumulate_columns(grad_v, __shfl_sync(0xffffffffu, prob, t), cuda::row_ptr<T>(p.grad_out, b, h, i0 + t),
                         s.v_dim, lane);
      accumulate_columns(grad_k, __shfl_sync(0xffffffffu, ds, t), cuda::row_ptr<T>(p.q, b, h, i0 + t), s.qk_dim,
                         lane);
    }
  }
  store_columns(grad_k, scale, cuda::row_ptr<T>(p.grad_k, b, h, j), s.qk_dim, lane);
  store_columns(grad_v, Acc(1), cuda::row_ptr<T>(p.grad_v, b, h, j), s.v_dim, lane);
}

template <typename T, typename Acc, typename Activation, bool kBanded>
__global__ void __launch_bounds__(kRowsPerBlock * kWarp)
    query_grads_kernel(const QuadraticParams p, Activation act) {
  __shared__ Acc q_shared[kRowsPerBlock][256];
  __shared__ Acc dout_shared[kRowsPerBlock][256];
  const AttentionShape s = p.shape;
  const int warp = threadIdx.x / kWarp, lane = threadIdx.x % kWarp;
  const int64_t row = int64_t(blockIdx.x) * kRowsPerBlock + warp;
  if (row >= s.batch * s.heads * s.q_len) return;
  const int64_t i = row % s.q_len, bh = row / s.q_len, b = bh / s.heads, h = bh % s.heads;
  const int64_t keys = keys_of(p.key_lengths, b, s.k_len);
  const SequenceConstants<Acc> constants = sequence_constants<Acc>(p, b);
  act.inv_divisor = constants.inv_divisor;
  const Dropout<Acc> dropout = Dropout<Acc>::of(p);
  const Acc scale = Acc(p.scale);
  load_shared(cuda::row_ptr<T>(p.q, b, h, i), s.qk_dim, scale, q_shared[warp], lane);
  load_shared(cuda::row_ptr<T>(p.grad_out, b, h, i), s.v_dim, Acc(1), dout_shared[warp], lane);

  Acc grad_q[kColsPerLane];
#pragma unroll
  for (int c = 0; c < kColsPerLane; ++c) grad_q[c] = Acc(0);

  const KeyBand band = key_band(p, keys);
  const int64_t visible = kBanded ? band.end(i) : keys;
  for (int64_t j0 = kBanded ? band.begin(i) : 0; j0 < visible; j0 += kWarp) {
    const int n = static_cast<int>(min(int64_t(kWarp), visible - j0));
    Acc prob = Acc(0), ds = Acc(0);
    if (lane < n) {
      const int64_t j = j0 + lane;
      const Acc score = dot_shared(q_shared[warp], cuda::row_ptr<T>(p.k, b, h, j), s.qk_dim) + constants.bias;
      const Acc dp = dot_shared(dout_shared[warp], cuda::row_ptr<T>(p.v, b, h, j), s.v_dim);
      pair_grads(p, act, row, score, dp, dropout.multiplier(row, j), &prob, &ds);
    }
    for (int t = 0; t < n; ++t) {
      accumulate_columns(grad_q, __shfl_sync(0xffffffffu, ds, t), cuda::row_ptr<T>(p.k, b, h, j0 + t), s.qk_dim,
                         lane);
    }
  }
  store_columns(grad_q, scale, cuda::row_ptr<T>(p.grad_q, b, h, i), s.qk_dim, lane);
}

}  // namespace

void quadratic_attention_backward_cuda(const QuadraticParams& params, cudaStream_t stream) {
  const AttentionShape& s = params.shape;
  const int64_t q_rows = s.batch * s.heads * s.q_len, k_rows = s.batch * s.heads * s.k_len;
  const unsigned threads = kRowsPerBlock * kWarp;
  const bool tensor_cores = cuda::quadratic_takes_tensor_cores(params, /*backward=*/true);
  dispatch_dtype_cuda(params.dtype, [&](auto types) {
    using T = typename decltype(types)::scalar_t;
    using Acc = typename decltype(types)::acc_t;
    dispatch_score_activation<Acc>(params.activation, [&](auto activation) {
      using Activation = decltype(activation);
      if (Activation::kNormalizesRows && q_rows > 0) {
        delta_kernel<T, Acc><<<cuda::blocks_for(q_rows, kRowsPerBlock), threads, 0, stream>>>(params);
        cuda::check_launch("quadratic_attention_backward (delta)");
      }
      if (tensor_cores) return cuda::quadratic_backward_tensor_core(params, stream);
      dispatch_bool(params.banded(), [&](auto banded) {
        constexpr bool kBanded = decltype(banded)::value;
        if (k_rows > 0 && params.grad_k.data != nullptr) {
          key_grads_kernel<T, Acc, Activation, kBanded>
              <<<cuda::blocks_for(k_rows, kRowsPerBlock), threads, 0, stream>>>(params, activation);
          cuda::check_launch("quadratic_attention_backward (dK, dV)");
        }
        if (q_rows > 0 && params.grad_q.data != nullptr) {
          query_grads_kernel<T, Acc, Activation, kBanded>
              <<<cuda::blocks_for(q_rows, kRowsPerBlock), threads, 0, stream>>>(params, activation);
          cuda::check_launch("quadratic_attention_backward (dQ)");
        }
      });
    });
  });
}

}  // namespace actattn
