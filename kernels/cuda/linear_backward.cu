// Linear attention backward on CUDA, feature map derivative fused: the generic kernels (any dtype and head dims).
//
// Same math as the CPU backward (kernels/cpu/linear_backward.cpp): with dnum_i = g_i / den_i and
// dden_i = -(g_i . o_i) / den_i (g_i and 0 without normalisation),
//   da_i = S_i dnum_i + z_i dden_i,  db_j = dS_j v_j + dz_j,  dv_j = dS_j^T b_j.
// Three kernels:
//  1. dden per row (one warp per row) into the workspace;
//  2. one block per (batch * head, block of kColumns value columns), chunks of kLinearChunk rows: a
//     forward sweep rebuilds S chunk by chunk for da, a reverse sweep grows dS chunk by chunk for db and
//     dv (causal); non-causal uses the full S and dS. dv is column-local and written directly; da and db
//     sum over all value columns, so each block writes its partial sums to the workspace;
//  3. dq = scale * phi'(q) * sum of partials, dk = phi'(k) * sum of partials, in a fixed order.
// Only what is asked for: without dq (null grad_q) the forward sweep and the dq partials go, without dk,
// dv (null grad_k, grad_v) the key passes only grow dS, dz for the initial state's gradients.
// No atomics: gradients are deterministic. Memory: the workspace holds (column blocks) x (size of q and
// k) partial sums plus one value per row. Float16 / bfloat16 at D = 64 and 128 take the tensor-core
// kernel instead (linear_backward_tc.cu), which needs no workspace.
#include "../dispatch.h"
#include "cuda_kernels.h"
#include "linear_common.cuh"
#include "tensor_core_paths.h"

namespace actattn {
namespace {

using cuda::kLinearChunk;
using cuda::kWarp;

template <typename Acc>
struct Workspace {
  Acc* grad_den;   // batch * heads * q_len
  Acc* partial_q;  // column blocks x batch * heads * q_len x Dk
  Acc* partial_k;  // column blocks x batch * heads * k_len x Dk

  __host__ __device__ explicit Workspace(const LinearParams& p) {
    const AttentionShape& s = p.shape;
    grad_den = static_cast<Acc*>(p.workspace);
    partial_q = grad_den + s.batch * s.heads * s.q_len;
    partial_k = partial_q + linear_blocks(s) * s.batch * s.heads * s.q_len * s.qk_dim;
  }

  __host__ __device__ static int64_t linear_blocks(const AttentionShape& s) {
    return (s.v_dim + cuda::linear_columns<Acc>() - 1) / cuda::linear_columns<Acc>();
  }

  static int64_t elems(const AttentionShape& s) {
    return s.batch * s.heads * (s.q_len + linear_blocks(s) * (s.q_len + s.k_len) * s.qk_dim);
  }
};

template <typename T, typename Acc>
__global__ void grad_den_kernel(const LinearParams p) {
  const AttentionShape s = p.shape;
  const int warp = threadIdx.x / kWarp, lane = threadIdx.x % kWarp;
  const int64_t row = int64_t(blockIdx.x) * (blockDim.x / kWarp) + warp;
  if (row >= s.batch * s.heads * s.q_len) return;
  const int64_t i = row % s.q_len, bh = row / s.q_len, b = bh / s.heads, h = bh % s.heads;
  Acc sum = Acc(0);
  if (p.normalize) {
    const T* g = cuda::row_ptr<T>(p.grad_out, b, h, i);
    const T* o = cuda::row_ptr<T>(p.out, b, h, i);
    for (int64_t e = lane; e < s.v_dim; e += kWarp) sum += cuda::to_acc<Acc>(g[e]) * cuda::to_acc<Acc>(o[e]);
    sum = -cuda::warp_sum(sum) / static_cast<const Acc*>(p.denominator.data)[row];
  }
  if (lane == 0) Workspace<Acc>(p).grad_den[row] = sum;
}

template <typename Acc>
int64_t backward_shared_elems(int64_t qk_dim) {
  const int64_t cols = cuda::linear_columns<Acc>();
  return 2 * (qk_dim * cols + qk_dim) + 2 * kLinearChunk * qk_dim + 2 * kLinearChunk * cols +
         2 * kLinearChunk * kLinearChunk + 2 * kLinearChunk;
}

template <typename T, typename Acc, typename Map, bool kCausal>
__global__ void __launch_bounds__(cuda::kLinearThreads) backward_kernel(const LinearParams p) {
  constexpr int kColumns = cuda::linear_columns<Acc>();
  const AttentionShape s = p.shape;
  const int64_t dk = s.qk_dim, bh = blockIdx.x, b = bh / s.heads, h = bh % s.heads;
  const int64_t col0 = int64_t(blockIdx.y) * kColumns;
  const int cols = static_cast<int>(min(int64_t(kColumns), s.v_dim - col0));
  const bool first_block = blockIdx.y == 0;  // the only block that adds the column-free (z, dden) terms
  // The same in every thread of the block, so the barriers below stay matched.
  const bool wants_q = p.grad_q.data != nullptr, wants_kv = p.grad_k.data != nullptr;
  const Workspace<Acc> ws(p);
  Acc* partial_q = ws.partial_q + int64_t(blockIdx.y) * s.batch * s.heads * s.q_len * dk;
  Acc* partial_k = ws.partial_k + int64_t(blockIdx.y) * s.batch * s.heads * s.k_len * dk;

  extern __shared__ unsigned char shared_bytes[];
  Acc* state = reinterpret_cast<Acc*>(shared_bytes);  // Dk x kColumns
  Acc* normalizer = state + dk * kColumns;             // Dk
  Acc* grad_state = normalizer + dk;                   // Dk x kColumns
  Acc* grad_normalizer = grad_state + dk * kColumns;   // Dk
  Acc* a = grad_normalizer + dk;                       // C x Dk
  Acc* keys = a + kLinearChunk * dk;                   // C x Dk
  Acc* values = keys + kLinearChunk * dk;              // C x kColumns
  Acc* grad_num = values + kLinearChunk * kColumns;    // C x kColumns
  Acc* mixed = grad_num + kLinearChunk * kColumns;     // C x C: v_u . dnum_t (+ dden_t in the first block)
  Acc* qk = mixed + kLinearChunk * kLinearChunk;       // C x C: a_t . b_u
  Acc* grad_den = qk + kLinearChunk * kLinearChunk;    // C
  Acc* inv_den = grad_den + kLinearChunk;              // C

  auto load_queries = [&](int64_t start, int rows) {
    cuda::load_mapped<T, Acc, Map>(p.q, b, h, start, rows, rows, dk, Acc(p.scale), a);
    for (int t = threadIdx.x; t < rows; t += blockDim.x) {
      const int64_t row = bh * s.q_len + start + t;
      inv_den[t] = p.normalize ? Acc(1) / static_cast<const Acc*>(p.denominator.data)[row] : Acc(1);
      grad_den[t] = ws.grad_den[row];
    }
    __syncthreads();
    cuda::load_columns<T, Acc, kColumns>(p.grad_out, b, h, start, rows, rows, col0, cols, inv_den, grad_num);
  };
  auto load_keys = [&](int64_t start, int rows) {
    const int valid = cuda::valid_rows(p, b, start, rows);
    cuda::load_mapped<T, Acc, Map>(p.k, b, h, start, rows, valid, dk, Acc(1), keys);
    cuda::load_columns<T, Acc, kColumns>(p.v, b, h, start, rows, valid, col0, cols, nullptr, values);
  };
  // mixed[t][u] and qk[t][u] for u <= t (causal chunk), zero elsewhere.
  auto chunk_products = [&](int rows, bool with_qk) {
    for (int idx = threadIdx.x; idx < kLinearChunk * kLinearChunk; idx += blockDim.x) {
      const int t = idx / kLinearChunk, u = idx % kLinearChunk;
      const bool seen = t < rows && u <= t;
      mixed[idx] = seen ? cuda::dot_rows(values + u * kColumns, grad_num + t * kColumns, kColumns) +
                              (first_block ? grad_den[t] : Acc(0))
                        : Acc(0);
      if (with_qk) qk[idx] = seen ? cuda::dot_rows(a + t * dk, keys + u * dk, dk) : Acc(0);
    }
  };
  // Partial da of the chunk's rows: S dnum + z dden (+ intra-chunk) into partial_q.
  auto query_partials = [&](int64_t start, int rows) {
    for (int64_t idx = threadIdx.x; idx < rows * dk; idx += blockDim.x) {
      const int t = static_cast<int>(idx / dk);
      const int64_t d = idx % dk;
      Acc da = first_block ? normalizer[d] * grad_den[t] : Acc(0);
      for (int e = 0; e < kColumns; ++e) da += state[d * kColumns + e] * grad_num[t * kColumns + e];
      if constexpr (kCausal)
        for (int u = 0; u <= t; ++u) da += mixed[t * kLinearChunk + u] * keys[u * dk + d];
      partial_q[(bh * s.q_len + start + t) * dk + d] = da;
    }
  };
  // Partial db of the chunk's keys into partial_k, and their dv (column-local, final); zero for padding.
  auto key_grads = [&](int64_t start, int rows) {
    const int valid = cuda::valid_rows(p, b, start, rows);
    for (int64_t idx = threadIdx.x; idx < rows * dk; idx += blockDim.x) {
      const int u = static_cast<int>(idx / dk);
      const int64_t d = idx % dk;
      if (u >= valid) {
        partial_k[(bh * s.k_len + start + u) * dk + d] = Acc(0);
        continue;
      }
      Acc db = first_block ? grad_normalizer[d] : Acc(0);
      for (int e = 0; e < kColumns; ++e) db += grad_state[d * kColumns + e] * values[u * kColumns + e];
      if constexpr (kCausal)
        for (int t = u; t < rows; ++t) db += mixed[t * kLinearChunk + u] * a[t * dk + d];
      partial_k[(bh * s.k_len + start + u) * dk + d] = db;
    }
    for (int idx = threadIdx.x; idx < rows * kColumns; idx += blockDim.x) {
      const int u = idx / kColumns, e = idx % kColumns;
      if (e >= cols) continue;
      if (u >= valid) {
        cuda::row_ptr<T>(p.grad_v, b, h, start + u)[col0 + e] = cuda::from_acc<T>(Acc(0));
        continue;
      }
      Acc dv = Acc(0);
      for (int64_t d = 0; d < dk; ++d) dv += grad_state[d * kColumns + e] * keys[u * dk + d];
      if constexpr (kCausal)
        for (int t = u; t < rows; ++t) dv += qk[t * kLinearChunk + u] * grad_num[t * kColumns + e];
      cuda::row_ptr<T>(p.grad_v, b, h, start + u)[col0 + e] = cuda::from_acc<T>(dv);
    }
  };

  cuda::load_state_columns<Acc, kColumns>(p.initial_state, bh, dk, s.v_dim, col0, cols, state);
  cuda::load_vector<Acc>(p.initial_normalizer, bh, dk, normalizer);
  cuda::load_state_columns<Acc, kColumns>(p.grad_final_state, bh, dk, s.v_dim, col0, cols, grad_state);
  cuda::load_vector<Acc>(p.grad_final_normalizer, bh, dk, grad_normalizer);
  __syncthreads();

  if constexpr (kCausal) {
    for (int64_t start = 0; wants_q && start < s.q_len; start += kLinearChunk) {  // forward sweep: da
      const int rows = static_cast<int>(min(int64_t(kLinearChunk), s.q_len - start));
      load_queries(start, rows);
      load_keys(start, rows);
      __syncthreads();
      chunk_products(rows, /*with_qk=*/false);
      __syncthreads();
      query_partials(start, rows);
      __syncthreads();
      cuda::absorb_chunk<Acc, kColumns>(keys, values, nullptr, rows, dk, state, normalizer);
      __syncthreads();
    }
    for (int64_t start = (s.k_len - 1) / kLinearChunk * kLinearChunk; s.k_len > 0 && start >= 0;
         start -= kLinearChunk) {  // reverse sweep: db, dv
      const int rows = static_cast<int>(min(int64_t(kLinearChunk), s.k_len - start));
      load_queries(start, rows);
      if (wants_kv) load_keys(start, rows);
      __syncthreads();
      if (wants_kv) chunk_products(rows, /*with_qk=*/true);
      __syncthreads();
      if (wants_kv) key_grads(start, rows);
      __syncthreads();
      cuda::absorb_chunk<Acc, kColumns>(a, grad_num, grad_den, rows, dk, grad_state, grad_normalizer);
      __syncthreads();
    }
  } else {
    for (int64_t start = 0; wants_q && start < s.k_len; start += kLinearChunk) {
      const int rows = static_cast<int>(min(int64_t(kLinearChunk), s.k_len - start));
      load_keys(start, rows);
      __syncthreads();
      cuda::absorb_chunk<Acc, kColumns>(keys, values, nullptr, rows, dk, state, normalizer);
      __syncthreads();
    }
    for (int64_t start = 0; start < s.q_len; start += kLinearChunk) {
      const int rows = static_cast<int>(min(int64_t(kLinearChunk), s.q_len - start));
      load_queries(start, rows);
      __syncthreads();
      if (wants_q) query_partials(start, rows);
      __syncthreads();
      cuda::absorb_chunk<Acc, kColumns>(a, grad_num, grad_den, rows, dk, grad_state, grad_normalizer);
      __syncthreads();
    }
    for (int64_t start = 0; wants_kv && start < s.k_len; start += kLinearChunk) {
      const int rows = static_cast<int>(min(int64_t(kLinearChunk), s.k_len - start));
      load_keys(start, rows);
      __syncthreads();
      key_grads(start, rows);
      __syncthreads();
    }
  }

  cuda::store_state_columns<Acc, kColumns>(grad_state, bh, dk, s.v_dim, col0, cols, p.grad_initial_state);
  if (first_block)
    for (int64_t d = threadIdx.x; d < dk; d += blockDim.x)
      static_cast<Acc*>(p.grad_initial_normalizer)[bh * dk + d] = grad_normalizer[d];
}

// grad = alpha * phi'(x) * (sum over column blocks of the partials), for every element of x.
template <typename T, typename Acc, typename Map>
__global__ void finish_kernel(const LinearParams p, const RowView x, const RowView grad, const Acc* partials,
                              int64_t rows_per_head, Acc alpha) {
  const AttentionShape s = p.shape;
  const int64_t total = s.batch * s.heads * rows_per_head * s.qk_dim;
  const int64_t blocks = Workspace<Acc>::linear_blocks(s);
  for (int64_t idx = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; idx < total;
       idx += int64_t(gridDim.x) * blockDim.x) {
    const int64_t d = idx % s.qk_dim, row = idx / s.qk_dim;
    const int64_t i = row % rows_per_head, bh = row / rows_per_head, b = bh / s.heads, h = bh % s.heads;
    Acc sum = Acc(0);
    for (int64_t cb = 0; cb < blocks; ++cb) sum += partials[cb * total + idx];
    const Acc value = cuda::to_acc<Acc>(cuda::row_ptr<T>(x, b, h, i)[d]);
    cuda::row_ptr<T>(grad, b, h, i)[d] = cuda::from_acc<T>(alpha * Map::grad(value, sum));
  }
}

}  // namespace

int64_t linear_attention_backward_workspace(const LinearParams& params) {
  if (cuda::linear_takes_tensor_cores(params, /*backward=*/true)) return 0;
  int64_t elems = 0;
  dispatch_dtype_cuda(params.dtype, [&](auto types) {
    elems = Workspace<typename decltype(types)::acc_t>::elems(params.shape);
  });
  return elems;
}

void linear_attention_backward_cuda(const LinearParams& params, cudaStream_t stream) {
  const AttentionShape& s = params.shape;
  if (s.batch * s.heads == 0) return;
  if (cuda::linear_takes_tensor_cores(params, /*backward=*/true)) {
    return cuda::linear_backward_tensor_core(params, stream);
  }
  dispatch_dtype_cuda(params.dtype, [&](auto types) {
    using T = typename decltype(types)::scalar_t;
    using Acc = typename decltype(types)::acc_t;
    const int64_t q_rows = s.batch * s.heads * s.q_len;
    if (q_rows > 0) {
      grad_den_kernel<T, Acc><<<cuda::blocks_for(q_rows, 4), 4 * kWarp, 0, stream>>>(params);
      cuda::check_launch("linear_attention_backward (dden)");
    }
    dispatch_feature_map(params.feature_map, [&](auto map) {
      using Map = decltype(map);
      dispatch_bool(params.causal, [&](auto causal) {
        auto kernel = backward_kernel<T, Acc, Map, decltype(causal)::value>;
        const size_t shared = backward_shared_elems<Acc>(s.qk_dim) * sizeof(Acc);
        cuda::allow_dynamic_shared(kernel, shared, "linear_attention_backward");
        const dim3 grid(static_cast<unsigned>(s.batch * s.heads),
                        static_cast<unsigned>(Workspace<Acc>::linear_blocks(s)));
        kernel<<<grid, cuda::kLinearThreads, shared, stream>>>(params);
        cuda::check_launch("linear_attention_backward");
      });
      const Workspace<Acc> ws(params);
      const unsigned threads = 256;
      const int64_t q_elems = q_rows * s.qk_dim, k_elems = s.batch * s.heads * s.k_len * s.qk_dim;
      if (q_elems > 0 && params.grad_q.data != nullptr) {
        finish_kernel<T, Acc, Map><<<std::min<int64_t>(cuda::blocks_for(q_elems, threads), 65535), threads, 0,
                                     stream>>>(params, params.q, params.grad_q, ws.partial_q, s.q_len,
                                               Acc(params.scale));
        cuda::check_launch("linear_attention_backward (dq)");
      }
      if (k_elems > 0 && params.grad_k.data != nullptr) {
        finish_kernel<T, Acc, Map><<<std::min<int64_t>(cuda::blocks_for(k_elems, threads), 65535), threads, 0,
                                     stream>>>(params, params.k, params.grad_k, ws.partial_k, s.k_len, Acc(1));
        cuda::check_launch("linear_attention_backward (dk)");
      }
    });
  });
}

}  // namespace actattn
