// Linear attention backward on CUDA, feature map derivative fused: the generic kernels (any dtype, any
// head dims, Dk != Dv; float16 / bfloat16 at D = 64 and 128 take linear_backward_tc.cuh instead).
//
// Same math as the CPU backward (kernels/cpu/linear_backward.cpp): with a = scale phi(q), b = phi(k),
// dnum_i = g_i / den_i and dden_i = -(g_i . o_i) / den_i (g_i and 0 without normalisation),
//   da_i = S_i dnum_i + z_i dden_i,  db_j = dS_j v_j + dz_j,  dv_j = dS_j^T b_j,
// S_i, z_i summing the keys query i sees (causal: j <= i; else all, after the initial state) and dS_j,
// dz_j the queries that see key j (after the final state's gradients).
// da and db sum over the value columns of a state, dv over its feature rows: no one split of the
// Dk x Dv state across blocks gives all three without adding partial sums from several blocks (which
// cost a workspace of (blocks) x N x Dk). So two kernels, each splitting the state its own way and
// writing final gradients:
//  - feature_grads_kernel: a block per (batch * head, kFeatureRows rows of Dk) holds those rows of S
//    across all value columns (forward sweep: da, hence dq) and then of dS (reverse sweep: db, hence
//    dk), chunk by chunk (kLinearChunk rows). The intra-chunk weights m_tu = v_u . dnum_t + dden_t
//    need whole value rows: every block forms them (kLinearChunk^2 Dv per chunk, as much as one
//    state update);
//  - value_grads_kernel: a block per (batch * head, kColumns value columns) holds those columns of dS
//    (reverse sweep) for dv, and writes the initial state's gradients.
// dS is formed by both (one more pass than a single kernel would make): the price of no partial sums.
// dden and 1 / den come first, one warp per row, into the workspace.
// Only what is asked for: without dq the forward sweep goes, without dk, dv the reverse sweep of
// feature_grads_kernel and value_grads_kernel's dv. No atomics: gradients are deterministic.
// Memory: the workspace holds dden and 1 / den, 2 batch * heads * q_len values; shared memory per block
// feature_grads: kFeatureRows x Dv state, two chunks of value rows, two of the block's feature rows
// (28 KiB in float32 at Dv = 128); value_grads: Dk x kColumns state, two chunks of feature rows.
#pragma once

#include "linear_common.cuh"

namespace actattn {
namespace cuda {
namespace linear_backward {

constexpr int kFeatureRows = 16;  // rows of Dk per feature_grads_kernel block
constexpr int kChunk = kLinearChunk;

// The workspace: per query row, dden_i and then 1 / den_i (1 without normalisation), each
// batch * heads * q_len values. The reciprocals are formed once here: a float64 division in the
// gradient kernels' loops is a call to a slow path that made ptxas spill around it.
template <typename Acc>
struct RowTerms {
  Acc* grad_den;
  Acc* inv_den;

  __host__ __device__ explicit RowTerms(const LinearParams& p) {
    grad_den = static_cast<Acc*>(p.workspace);
    inv_den = grad_den + p.shape.batch * p.shape.heads * p.shape.q_len;
  }
};

inline int64_t workspace_elems(const AttentionShape& s) { return 2 * s.batch * s.heads * s.q_len; }

// dden_i = -(g_i . o_i) / den_i and 1 / den_i (0 and 1 without normalisation) into the workspace;
// one warp per row.
template <typename T, typename Acc>
__global__ void row_terms_kernel(const LinearParams p) {
  const AttentionShape s = p.shape;
  const int warp = threadIdx.x / kWarp, lane = threadIdx.x % kWarp;
  const int64_t row = int64_t(blockIdx.x) * (blockDim.x / kWarp) + warp;
  if (row >= s.batch * s.heads * s.q_len) return;
  const int64_t i = row % s.q_len, bh = row / s.q_len, b = bh / s.heads, h = bh % s.heads;
  Acc sum = Acc(0), inv_den = Acc(1);
  if (p.normalize) {
    const T* g = row_ptr<T>(p.grad_out, b, h, i);
    const T* o = row_ptr<T>(p.out, b, h, i);
    for (int64_t e = lane; e < s.v_dim; e += kWarp) sum += to_acc<Acc>(g[e]) * to_acc<Acc>(o[e]);
    inv_den = Acc(1) / static_cast<const Acc*>(p.denominator.data)[row];
    sum = -warp_sum(sum) * inv_den;
  }
  if (lane == 0) {
    const RowTerms<Acc> terms(p);
    terms.grad_den[row] = sum;
    terms.inv_den[row] = inv_den;
  }
}

// Leading dimension of feature_grads_kernel's state rows: Dv + 1, so that the rows a warp reads at
// the same column fall in different banks.
__host__ __device__ inline int64_t feature_state_ld(int64_t v_dim) { return v_dim + 1; }

template <typename Acc>
int64_t feature_grads_shared_bytes(int64_t v_dim) {
  const int64_t elems = kFeatureRows * feature_state_ld(v_dim) + kFeatureRows + 2 * kChunk * kFeatureRows +
                        2 * kChunk * v_dim + kChunk * kChunk + 2 * kChunk;
  return elems * static_cast<int64_t>(sizeof(Acc));
}

template <typename T, typename Acc, typename Map, bool kCausal>
__global__ void __launch_bounds__(kLinearThreads) feature_grads_kernel(const LinearParams p) {
  const AttentionShape s = p.shape;
  // Indices inside the block's tiles in 32 bits: a 64-bit division is a called subroutine on the GPU,
  // and ptxas spilled around it.
  const int dv = static_cast<int>(s.v_dim), ld = static_cast<int>(feature_state_ld(s.v_dim));
  const int64_t bh = blockIdx.x, b = bh / s.heads, h = bh % s.heads;
  const int64_t row0 = int64_t(blockIdx.y) * kFeatureRows;  // the block's first feature (row of Dk)
  const int features = static_cast<int>(min(int64_t(kFeatureRows), s.qk_dim - row0));
  // The same in every thread of the block, so the barriers below stay matched.
  const bool wants_q = p.grad_q.data != nullptr, wants_kv = p.grad_k.data != nullptr;
  const Acc scale = Acc(p.scale);

  Acc* state = dynamic_shared<Acc>();                   // kFeatureRows x Dv (ld): rows of S, then of dS
  Acc* normalizer = state + kFeatureRows * ld;          // kFeatureRows: z, then dz
  Acc* a = normalizer + kFeatureRows;                   // kChunk x kFeatureRows: the block's features of a
  Acc* keys = a + kChunk * kFeatureRows;                // kChunk x kFeatureRows: ... of b
  Acc* values = keys + kChunk * kFeatureRows;           // kChunk x Dv
  Acc* grad_num = values + kChunk * dv;                 // kChunk x Dv: dnum
  Acc* mixed = grad_num + kChunk * dv;                  // kChunk x kChunk: m_tu for u <= t (causal)
  Acc* grad_den = mixed + kChunk * kChunk;              // kChunk
  Acc* inv_den = grad_den + kChunk;                     // kChunk

  auto load_queries = [&](int64_t start, int rows) {
    load_mapped_columns<T, Acc, Map, kFeatureRows>(p.q, b, h, start, rows, rows, row0, features, scale, a);
    const RowTerms<Acc> terms(p);
    for (int t = threadIdx.x; t < rows; t += blockDim.x) {
      inv_den[t] = terms.inv_den[bh * s.q_len + start + t];
      grad_den[t] = terms.grad_den[bh * s.q_len + start + t];
    }
    __syncthreads();  // inv_den, for grad_num
    load_rows<T, Acc>(p.grad_out, b, h, start, rows, rows, dv, inv_den, grad_num);
  };
  auto load_keys = [&](int64_t start, int rows) {
    const int valid = valid_rows(p, b, start, rows);
    load_mapped_columns<T, Acc, Map, kFeatureRows>(p.k, b, h, start, rows, valid, row0, features, Acc(1), keys);
    load_rows<T, Acc>(p.v, b, h, start, rows, valid, dv, nullptr, values);
  };
  // state rows (+)= the feature rows of src (Dk x Dv, contiguous per head), or zeros when src is null.
  auto load_state = [&](const void* src, const void* vec) {
    for (int idx = threadIdx.x; idx < kFeatureRows * dv; idx += blockDim.x) {
      const int d = idx / dv, e = idx % dv;
      state[d * ld + e] = src != nullptr && d < features
                              ? static_cast<const Acc*>(src)[(bh * s.qk_dim + row0 + d) * dv + e]
                              : Acc(0);
    }
    for (int d = threadIdx.x; d < kFeatureRows; d += blockDim.x)
      normalizer[d] = vec != nullptr && d < features ? static_cast<const Acc*>(vec)[bh * s.qk_dim + row0 + d] : Acc(0);
  };
  // state += left^T right over the chunk's rows (left: kChunk x kFeatureRows, right: kChunk x Dv);
  // normalizer += left^T weight (weight null: ones).
  auto absorb = [&](const Acc* left, const Acc* right, const Acc* weight, int rows) {
    for (int idx = threadIdx.x; idx < kFeatureRows * dv; idx += blockDim.x) {
      const int d = idx / dv, e = idx % dv;
      Acc sum = Acc(0);
      for (int t = 0; t < rows; ++t) sum += left[t * kFeatureRows + d] * right[t * dv + e];
      state[d * ld + e] += sum;
    }
    for (int d = threadIdx.x; d < kFeatureRows; d += blockDim.x) {
      Acc sum = Acc(0);
      for (int t = 0; t < rows; ++t) sum += left[t * kFeatureRows + d] * (weight ? weight[t] : Acc(1));
      normalizer[d] += sum;
    }
  };
  // m_tu = v_u . dnum_t + dden_t for u <= t < rows, 0 elsewhere (the causal chunk's own pairs).
  auto form_mixed = [&](int rows) {
    for (int idx = threadIdx.x; idx < kChunk * kChunk; idx += blockDim.x) {
      const int t = idx / kChunk, u = idx % kChunk;
      mixed[idx] = t < rows && u <= t ? dot_rows(values + u * dv, grad_num + t * dv, dv) + grad_den[t] : Acc(0);
    }
  };
  // dq of the chunk's queries at the block's features: scale phi'(q) (S dnum + z dden (+ intra-chunk)).
  auto write_query_grads = [&](int64_t start, int rows) {
    for (int idx = threadIdx.x; idx < rows * kFeatureRows; idx += blockDim.x) {
      const int t = idx / kFeatureRows, d = idx % kFeatureRows;
      if (d >= features) continue;
      Acc da = normalizer[d] * grad_den[t] + dot_rows(state + d * ld, grad_num + t * dv, dv);
      if constexpr (kCausal)
        for (int u = 0; u <= t; ++u) da += mixed[t * kChunk + u] * keys[u * kFeatureRows + d];
      T* dq = row_ptr<T>(p.grad_q, b, h, start + t) + row0 + d;
      *dq = from_acc<T>(scale * Map::grad(to_acc<Acc>(row_ptr<T>(p.q, b, h, start + t)[row0 + d]), da));
    }
  };
  // dk of the chunk's keys at the block's features: phi'(k) (dS v + dz (+ intra-chunk)); 0 for padding.
  auto write_key_grads = [&](int64_t start, int rows) {
    const int valid = valid_rows(p, b, start, rows);
    for (int idx = threadIdx.x; idx < rows * kFeatureRows; idx += blockDim.x) {
      const int u = idx / kFeatureRows, d = idx % kFeatureRows;
      if (d >= features) continue;
      T* dk = row_ptr<T>(p.grad_k, b, h, start + u) + row0 + d;
      if (u >= valid) {
        *dk = from_acc<T>(Acc(0));
        continue;
      }
      Acc db = normalizer[d] + dot_rows(state + d * ld, values + u * dv, dv);
      if constexpr (kCausal)
        for (int t = u; t < rows; ++t) db += mixed[t * kChunk + u] * a[t * kFeatureRows + d];
      *dk = from_acc<T>(Map::grad(to_acc<Acc>(row_ptr<T>(p.k, b, h, start + u)[row0 + d]), db));
    }
  };

  if constexpr (kCausal) {  // q_len == k_len
    if (wants_q) {          // forward sweep: S before each chunk, its own pairs through m_tu
      load_state(p.initial_state, p.initial_normalizer);
      for (int64_t start = 0; start < s.q_len; start += kChunk) {
        const int rows = static_cast<int>(min(int64_t(kChunk), s.q_len - start));
        load_queries(start, rows);
        load_keys(start, rows);
        __syncthreads();
        form_mixed(rows);
        __syncthreads();
        write_query_grads(start, rows);
        __syncthreads();  // every read of the state before it grows
        absorb(keys, values, nullptr, rows);
        __syncthreads();
      }
    }
    if (wants_kv) {  // reverse sweep: dS after each chunk
      load_state(p.grad_final_state, p.grad_final_normalizer);
      for (int64_t start = (s.k_len - 1) / kChunk * kChunk; s.k_len > 0 && start >= 0; start -= kChunk) {
        const int rows = static_cast<int>(min(int64_t(kChunk), s.k_len - start));
        load_queries(start, rows);
        load_keys(start, rows);
        __syncthreads();
        form_mixed(rows);
        __syncthreads();
        write_key_grads(start, rows);
        __syncthreads();
        absorb(a, grad_num, grad_den, rows);
        __syncthreads();
      }
    }
  } else {
    if (wants_q) {
      if (p.saved_state != nullptr) {  // the forward's state over all keys: no pass over the keys
        load_state(p.saved_state, p.saved_normalizer);
      } else {
        load_state(p.initial_state, p.initial_normalizer);
        for (int64_t start = 0; start < s.k_len; start += kChunk) {
          const int rows = static_cast<int>(min(int64_t(kChunk), s.k_len - start));
          load_keys(start, rows);
          __syncthreads();
          absorb(keys, values, nullptr, rows);
          __syncthreads();
        }
      }
      for (int64_t start = 0; start < s.q_len; start += kChunk) {
        const int rows = static_cast<int>(min(int64_t(kChunk), s.q_len - start));
        load_queries(start, rows);
        __syncthreads();
        write_query_grads(start, rows);
        __syncthreads();
      }
    }
    if (wants_kv) {
      load_state(p.grad_final_state, p.grad_final_normalizer);
      for (int64_t start = 0; start < s.q_len; start += kChunk) {
        const int rows = static_cast<int>(min(int64_t(kChunk), s.q_len - start));
        load_queries(start, rows);
        __syncthreads();
        absorb(a, grad_num, grad_den, rows);
        __syncthreads();
      }
      for (int64_t start = 0; start < s.k_len; start += kChunk) {
        const int rows = static_cast<int>(min(int64_t(kChunk), s.k_len - start));
        load_keys(start, rows);
        __syncthreads();
        write_key_grads(start, rows);
        __syncthreads();
      }
    }
  }
}

template <typename Acc>
int64_t value_grads_shared_bytes(int64_t qk_dim) {
  constexpr int64_t kColumns = linear_columns<Acc>();
  const int64_t elems =
      qk_dim * kColumns + qk_dim + 2 * kChunk * qk_dim + kChunk * kColumns + kChunk * kChunk + 2 * kChunk;
  return elems * static_cast<int64_t>(sizeof(Acc));
}

template <typename T, typename Acc, typename Map, bool kCausal>
__global__ void __launch_bounds__(kLinearThreads) value_grads_kernel(const LinearParams p) {
  constexpr int kColumns = linear_columns<Acc>();
  const AttentionShape s = p.shape;
  const int64_t dk = s.qk_dim, bh = blockIdx.x, b = bh / s.heads, h = bh % s.heads;
  const int64_t col0 = int64_t(blockIdx.y) * kColumns;
  const int cols = static_cast<int>(min(int64_t(kColumns), s.v_dim - col0));
  const bool wants_kv = p.grad_k.data != nullptr;  // the same in every thread: barriers stay matched

  Acc* grad_state = dynamic_shared<Acc>();              // Dk x kColumns: columns of dS
  Acc* grad_normalizer = grad_state + dk * kColumns;    // Dk: dz
  Acc* a = grad_normalizer + dk;                        // kChunk x Dk
  Acc* keys = a + kChunk * dk;                          // kChunk x Dk
  Acc* grad_num = keys + kChunk * dk;                   // kChunk x kColumns
  Acc* qk = grad_num + kChunk * kColumns;               // kChunk x kChunk: a_t . b_u for u <= t
  Acc* grad_den = qk + kChunk * kChunk;                 // kChunk
  Acc* inv_den = grad_den + kChunk;                     // kChunk

  auto load_queries = [&](int64_t start, int rows) {
    load_mapped<T, Acc, Map>(p.q, b, h, start, rows, rows, dk, Acc(p.scale), a);
    const RowTerms<Acc> terms(p);
    for (int t = threadIdx.x; t < rows; t += blockDim.x) {
      inv_den[t] = terms.inv_den[bh * s.q_len + start + t];
      grad_den[t] = terms.grad_den[bh * s.q_len + start + t];
    }
    __syncthreads();  // inv_den, for grad_num
    load_columns<T, Acc, kColumns>(p.grad_out, b, h, start, rows, rows, col0, cols, inv_den, grad_num);
  };
  auto load_keys = [&](int64_t start, int rows) {
    load_mapped<T, Acc, Map>(p.k, b, h, start, rows, valid_rows(p, b, start, rows), dk, Acc(1), keys);
  };
  // dv of the chunk's keys at the block's columns: dS^T b (+ intra-chunk); 0 for padding.
  auto write_value_grads = [&](int64_t start, int rows) {
    const int valid = valid_rows(p, b, start, rows);
    for (int idx = threadIdx.x; idx < rows * kColumns; idx += blockDim.x) {
      const int u = idx / kColumns, e = idx % kColumns;
      if (e >= cols) continue;
      Acc dv = Acc(0);
      if (u < valid) {
        for (int64_t d = 0; d < dk; ++d) dv += grad_state[d * kColumns + e] * keys[u * dk + d];
        if constexpr (kCausal)
          for (int t = u; t < rows; ++t) dv += qk[t * kChunk + u] * grad_num[t * kColumns + e];
      }
      row_ptr<T>(p.grad_v, b, h, start + u)[col0 + e] = from_acc<T>(dv);
    }
  };

  load_state_columns<Acc, kColumns>(p.grad_final_state, bh, dk, s.v_dim, col0, cols, grad_state);
  load_vector<Acc>(p.grad_final_normalizer, bh, dk, grad_normalizer);
  __syncthreads();
  if constexpr (kCausal) {  // reverse sweep: dS after each chunk, its own pairs through a_t . b_u
    for (int64_t start = (s.k_len - 1) / kChunk * kChunk; s.k_len > 0 && start >= 0; start -= kChunk) {
      const int rows = static_cast<int>(min(int64_t(kChunk), s.k_len - start));
      load_queries(start, rows);
      if (wants_kv) load_keys(start, rows);
      __syncthreads();
      if (wants_kv) {
        for (int idx = threadIdx.x; idx < kChunk * kChunk; idx += blockDim.x) {
          const int t = idx / kChunk, u = idx % kChunk;
          qk[idx] = t < rows && u <= t ? dot_rows(a + t * dk, keys + u * dk, dk) : Acc(0);
        }
        __syncthreads();
        write_value_grads(start, rows);
      }
      __syncthreads();  // every read of dS before it grows
      absorb_chunk<Acc, kColumns>(a, grad_num, grad_den, rows, dk, grad_state, grad_normalizer);
      __syncthreads();
    }
  } else {
    for (int64_t start = 0; start < s.q_len; start += kChunk) {
      const int rows = static_cast<int>(min(int64_t(kChunk), s.q_len - start));
      load_queries(start, rows);
      __syncthreads();
      absorb_chunk<Acc, kColumns>(a, grad_num, grad_den, rows, dk, grad_state, grad_normalizer);
      __syncthreads();
    }
    for (int64_t start = 0; wants_kv && start < s.k_len; start += kChunk) {
      const int rows = static_cast<int>(min(int64_t(kChunk), s.k_len - start));
      load_keys(start, rows);
      __syncthreads();
      write_value_grads(start, rows);
      __syncthreads();
    }
  }

  store_state_columns<Acc, kColumns>(grad_state, bh, dk, s.v_dim, col0, cols, p.grad_initial_state);
  if (blockIdx.y == 0)  // dz involves no value column: the first block writes it
    for (int64_t d = threadIdx.x; d < dk; d += blockDim.x)
      static_cast<Acc*>(p.grad_initial_normalizer)[bh * dk + d] = grad_normalizer[d];
}

}  // namespace linear_backward
}  // namespace cuda
}  // namespace actattn
