// Linear attention forward on CUDA, feature map fused: the generic kernel (any dtype and head dims);
// float16 / bfloat16 at D = 64 and 128 take the tensor-core kernel (linear_forward_tc.cu, chosen in
// tensor_core_paths.h).
//
// Grid: (batch * heads, column blocks of kColumns value columns). Each block keeps S (Dk x kColumns) and
// z (Dk) in shared memory and walks the sequence in chunks of kLinearChunk rows (linear_common.cuh):
// causal: W = tril(A B^T) for the chunk, num = A S + W V, den = A z + rowsum(W) + eps, then
// S += B^T V, z += B^T 1; non-causal: S and z over all keys first, then num = A S, den = A z + eps.
// Time O(N Dk Dv + N C (Dk + Dv)); memory O(Dk kColumns + C Dk) shared per block, no per-position state.
// Saved for backward: den (written by column block 0) and the output.
#include "../dispatch.h"
#include "cuda_kernels.h"
#include "linear_common.cuh"
#include "tensor_core_paths.h"

namespace actattn {
namespace {

using cuda::kLinearChunk;

template <typename Acc>
int64_t forward_shared_elems(int64_t qk_dim) {
  const int64_t cols = cuda::linear_columns<Acc>();
  return qk_dim * cols + qk_dim + 2 * kLinearChunk * qk_dim + kLinearChunk * cols + kLinearChunk * kLinearChunk +
         kLinearChunk;
}

template <typename T, typename Acc, typename Map, bool kCausal>
__global__ void __launch_bounds__(cuda::kLinearThreads) forward_kernel(const LinearParams p) {
  constexpr int kColumns = cuda::linear_columns<Acc>();
  const AttentionShape s = p.shape;
  const int64_t dk = s.qk_dim, bh = blockIdx.x, b = bh / s.heads, h = bh % s.heads;
  const int64_t col0 = int64_t(blockIdx.y) * kColumns;
  const int cols = static_cast<int>(min(int64_t(kColumns), s.v_dim - col0));

  extern __shared__ unsigned char shared_bytes[];
  Acc* state = reinterpret_cast<Acc*>(shared_bytes);  // Dk x kColumns
  Acc* normalizer = state + dk * kColumns;             // Dk
  Acc* a = normalizer + dk;                            // C x Dk
  Acc* keys = a + kLinearChunk * dk;                   // C x Dk
  Acc* values = keys + kLinearChunk * dk;              // C x kColumns
  Acc* weights = values + kLinearChunk * kColumns;     // C x C
  Acc* den = weights + kLinearChunk * kLinearChunk;    // C

  cuda::load_state_columns<Acc, kColumns>(p.initial_state, bh, dk, s.v_dim, col0, cols, state);
  cuda::load_vector<Acc>(p.initial_normalizer, bh, dk, normalizer);
  __syncthreads();

  if constexpr (!kCausal) {
    for (int64_t start = 0; start < s.k_len; start += kLinearChunk) {
      const int rows = static_cast<int>(min(int64_t(kLinearChunk), s.k_len - start));
      const int valid = cuda::valid_rows(p, b, start, rows);
      cuda::load_mapped<T, Acc, Map>(p.k, b, h, start, rows, valid, dk, Acc(1), keys);
      cuda::load_columns<T, Acc, kColumns>(p.v, b, h, start, rows, valid, col0, cols, nullptr, values);
      __syncthreads();
      cuda::absorb_chunk<Acc, kColumns>(keys, values, nullptr, rows, dk, state, normalizer);
      __syncthreads();
    }
  }

  for (int64_t start = 0; start < s.q_len; start += kLinearChunk) {
    const int rows = static_cast<int>(min(int64_t(kLinearChunk), s.q_len - start));
    cuda::load_mapped<T, Acc, Map>(p.q, b, h, start, rows, rows, dk, Acc(p.scale), a);
    if constexpr (kCausal) {
      const int valid = cuda::valid_rows(p, b, start, rows);
      cuda::load_mapped<T, Acc, Map>(p.k, b, h, start, rows, valid, dk, Acc(1), keys);
      cuda::load_columns<T, Acc, kColumns>(p.v, b, h, start, rows, valid, col0, cols, nullptr, values);
    }
    __syncthreads();
    if constexpr (kCausal) {
      for (int idx = threadIdx.x; idx < kLinearChunk * kLinearChunk; idx += blockDim.x) {
        const int t = idx / kLinearChunk, u = idx % kLinearChunk;
        weights[idx] = (t < rows && u <= t) ? cuda::dot_rows(a + t * dk, keys + u * dk, dk) : Acc(0);
      }
      __syncthreads();
    }
    for (int t = threadIdx.x; t < rows; t += blockDim.x) {
      Acc d = cuda::dot_rows(a + t * dk, normalizer, dk) + Acc(p.eps);
      if constexpr (kCausal)
        for (int u = 0; u <= t; ++u) d += weights[t * kLinearChunk + u];
      den[t] = d;
      if (p.normalize && blockIdx.y == 0) static_cast<Acc*>(p.denominator.data)[bh * s.q_len + start + t] = d;
    }
    __syncthreads();
    for (int idx = threadIdx.x; idx < rows * kColumns; idx += blockDim.x) {
      const int t = idx / kColumns, e = idx % kColumns;
      if (e >= cols) continue;
      Acc num = Acc(0);
      for (int64_t d = 0; d < dk; ++d) num += a[t * dk + d] * state[d * kColumns + e];
      if constexpr (kCausal)
        for (int u = 0; u <= t; ++u) num += weights[t * kLinearChunk + u] * values[u * kColumns + e];
      cuda::row_ptr<T>(p.out, b, h, start + t)[col0 + e] = cuda::from_acc<T>(p.normalize ? num / den[t] : num);
    }
    __syncthreads();
    if constexpr (kCausal) {
      cuda::absorb_chunk<Acc, kColumns>(keys, values, nullptr, rows, dk, state, normalizer);
      __syncthreads();
    }
  }

  cuda::store_state_columns<Acc, kColumns>(state, bh, dk, s.v_dim, col0, cols, p.final_state);
  if (blockIdx.y == 0)
    for (int64_t d = threadIdx.x; d < dk; d += blockDim.x)
      static_cast<Acc*>(p.final_normalizer)[bh * dk + d] = normalizer[d];
}

}  // namespace

int64_t linear_attention_forward_workspace(const LinearParams& params) {
  if (!cuda::linear_takes_tensor_cores(params, /*backward=*/false)) return 0;  // the generic kernels need none
  return cuda::linear_forward_tensor_core_workspace(params);
}

void linear_attention_forward_cuda(const LinearParams& params, cudaStream_t stream) {
  const AttentionShape& s = params.shape;
  if (s.batch * s.heads == 0) return;
  if (cuda::linear_takes_tensor_cores(params, /*backward=*/false)) {
    return cuda::linear_forward_tensor_core(params, stream);
  }
  dispatch_dtype_cuda(params.dtype, [&](auto types) {
    using T = typename decltype(types)::scalar_t;
    using Acc = typename decltype(types)::acc_t;
    dispatch_feature_map(params.feature_map, [&](auto map) {
      dispatch_bool(params.causal, [&](auto causal) {
        auto kernel = forward_kernel<T, Acc, decltype(map), decltype(causal)::value>;
        const size_t shared = forward_shared_elems<Acc>(s.qk_dim) * sizeof(Acc);
        cuda::allow_dynamic_shared(kernel, shared, "linear_attention_forward");
        const dim3 grid(static_cast<unsigned>(s.batch * s.heads),
                        static_cast<unsigned>(cuda::linear_column_blocks<Acc>(s.v_dim)));
        kernel<<<grid, cuda::kLinearThreads, shared, stream>>>(params);
        cuda::check_launch("linear_attention_forward");
      });
    });
  });
}

}  // namespace actattn
