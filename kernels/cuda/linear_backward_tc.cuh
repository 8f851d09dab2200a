// Linear attention backward on tensor cores (float16 / bfloat16, Dk = Dv = D in {64, 128}, sm_80+).
//
// With dnum_i = dO_i / den_i, dden_i = -(dnum_i . o_i) (dnum = dO, dden = 0 without normalisation):
//   da_i = S_i dnum_i + z_i dden_i,   dq_i = scale phi'(q_i) da_i,
//   db_j = dS_j v_j + dz_j,           dk_j = phi'(k_j) db_j,         dv_j = dS_j^T b_j,
// where S_i, z_i are the state a query sees and dS_j = dS_final + sum_{i sees j} a_i dnum_i^T (dz_j
// likewise with dden) is the gradient reaching key j's contribution to the state.
//
// Algorithm: one launch, two blocks per (batch, head), each owning what it writes, so the gradients are
// deterministic with no atomics and no workspace:
//   * the query block rebuilds S and z chunk by chunk, as the forward does, and per chunk forms
//     da = dNum S^T + dden z^T + M B with M = tril(dNum V^T + dden 1^T);
//   * the key block walks the chunks backwards growing dS and dz (from the final state's gradient), and
//     per chunk forms dv = B dS + tril(A B^T)^T dNum and db = V dS^T + dz + M^T A, then
//     dS += A^T dNum, dz += A^T dden. Its final dS, dz are the initial state's gradients.
// The masked blocks (M, tril(A B^T)^T) are made 16 rows x 16 columns at a time in registers and fed into
// the next product; blocks wholly masked are skipped. Non-causal: the full S (or dS) first, then one pass.
// Non-causal with saved_state (the forward's final state): the query block reads S and z instead of
// rebuilding them from the keys (a pass over them fewer).
// Only what is asked for: without dq (null grad_q) the query block returns at once; without dk, dv
// (null grad_k and grad_v) the key block only grows dS, dz for the initial state's gradients, loading
// no keys. The gradients it does compute are the same bits either way.
// Accuracy: da and db are sums of terms that nearly cancel when the values share a large mean m
// (S_i dnum_i ~ z_i (m . dnum_i) ~ -z_i dden_i), and the state enters them rounded to 16 bits. So each
// chunk centres on m = the output row of its last query: the query block rounds S - z m^T (S itself
// stays uncentred in float32) and weights z by dden + dnum . m; the key block multiplies dS by V - m and
// adds dz + dS m, summed in float32. Exact algebra; it moves the cancellation into float32. dden is taken
// from the rounded dnum, so that dnum . v_j + dden cancels in the products as it does in exact arithmetic.
// In the emulation (values ~ N(128, 1), float16, N = 512): dq's error 0.07 %, against 16 % (causal) and
// 84 % (non-causal, D = 128) without centring, measured against a float64 reference that takes the saved
// 16-bit output for dden, as the kernel must (FlashAttention's delta does the same).
// Float16: S or dS is divided by a power of two before it is rounded into shared memory, and the products
// with it are multiplied back in float32 (linear_tc::state_divisor), so a state past 65504 is no inf.
// Memory: shared tiles for A, B, V, dNum and the state (5 x D x (D + 8) elements: 45 KiB at D = 64,
// 170 KiB at D = 128), five float32 vectors and one float per warp; nothing in global memory but inputs
// and gradients. __launch_bounds__(threads, 1): the grid has 2 B H blocks, about one per SM, so registers
// (up to 255) are worth more than a second resident block; at D = 64 the default let ptxas stop at 128
// registers and spill.
// Recomputes phi(q), phi(k) and the states; reads the forward's output and den.
#pragma once

#include "linear_tc_common.cuh"

namespace actattn {
namespace cuda {
namespace linear_backward_tc {

constexpr int kQueryBlock = 0;  // blockIdx.y
constexpr int kKeyBlock = 1;

template <int kD>
constexpr int shared_bytes() {
  using Sh = linear_tc::Shape<kD>;
  return 5 * Sh::kTileElems * 2 + (4 * kD + Sh::kWarps) * static_cast<int>(sizeof(float));
}

template <typename T, int kD>
struct Tiles {
  using Sh = linear_tc::Shape<kD>;
  T* a;         // scale phi(Q) of a chunk
  T* b;         // phi(K) of a chunk
  T* v;         // V of a chunk
  T* dnum;      // dO / den of a chunk
  T* state;     // S (query block) or dS (key block), rounded
  float* z;     // z or dz
  float* dden;   // dden of a chunk's rows
  float* shift;  // dnum . m of a chunk's rows, for the chunk's centre m
  float* dz_centred;  // key block: dz + dS m
  float* slots;  // one float per warp (linear_tc::state_divisor)

  __device__ Tiles() {
    a = dynamic_shared<T>();
    b = a + Sh::kTileElems;
    v = b + Sh::kTileElems;
    dnum = v + Sh::kTileElems;
    state = dnum + Sh::kTileElems;
    z = reinterpret_cast<float*>(state + Sh::kTileElems);
    dden = z + kD;
    shift = dden + kD;
    dz_centred = shift + kD;
    slots = dz_centred + kD;
  }
};

// dq for the chunk at q0: da = dNum S^T + dden z^T + tril(dNum V^T + dden) B, then the map's derivative.
template <typename T, typename Map, bool kCausal, int kD>
__device__ __forceinline__ void query_chunk_grads(const LinearParams& p, const Tiles<T, kD>& sm, int64_t b,
                                                  int64_t h, int64_t q0, float sigma) {
  using Sh = linear_tc::Shape<kD>;
  constexpr int kLd = Sh::kLd, kTiles = Sh::kTiles, kSteps = Sh::kSteps;
  const int warp = threadIdx.x / kWarp, lane = threadIdx.x % kWarp, g = lane / 4, t = lane % 4;
  const T* dnum_rows = sm.dnum + warp * 16 * kLd;

  mma::FragC da[kTiles];
  mma::zero(da);
  mma::mma_shared_a_bt<T, kSteps>(da, dnum_rows, kLd, sm.state, kLd, lane);
  linear_tc::multiply(da, sigma);
  const float row_dden[2] = {sm.dden[warp * 16 + g], sm.dden[warp * 16 + g + 8]};
  // S_c was centred on m (S_c - z_c m^T), so z_c takes dden + dnum . m.
  const float row_z_weight[2] = {row_dden[0] + sm.shift[warp * 16 + g], row_dden[1] + sm.shift[warp * 16 + g + 8]};
#pragma unroll
  for (int n = 0; n < kTiles; ++n) {
#pragma unroll
    for (int r = 0; r < 4; ++r) da[n].x[r] += row_z_weight[r >> 1] * sm.z[n * 8 + 2 * t + (r & 1)];
  }
  if constexpr (kCausal) {
    for (int kb = 0; kb <= warp; ++kb) {
      mma::FragC m[2];
      mma::zero(m);
      mma::mma_shared_a_bt<T, kSteps>(m, dnum_rows, kLd, sm.v + kb * 16 * kLd, kLd, lane);
#pragma unroll
      for (int n = 0; n < 2; ++n) {
#pragma unroll
        for (int r = 0; r < 4; ++r) {
          const int key = n * 8 + 2 * t + (r & 1), row = g + 8 * (r >> 1);
          m[n].x[r] = (kb == warp && key > row) ? 0.f : m[n].x[r] + row_dden[r >> 1];
        }
      }
      mma::mma_p_b<T, 1>(da, m, sm.b + kb * 16 * kLd, kLd, lane);
    }
  }

  const float scale = static_cast<float>(p.scale);
#pragma unroll
  for (int half = 0; half < 2; ++half) {
    const int64_t i = q0 + warp * 16 + g + 8 * half;
    if (i >= p.shape.q_len) continue;
    const T* q_row = row_ptr<const T>(p.q, b, h, i);
    T* dq_row = row_ptr<T>(p.grad_q, b, h, i);
#pragma unroll
    for (int n = 0; n < kTiles; ++n) {
      const int c = n * 8 + 2 * t;
      const float2 q = linear_tc::unpack<T>(*reinterpret_cast<const uint32_t*>(q_row + c));
      *reinterpret_cast<uint32_t*>(dq_row + c) =
          mma::pack<T>(scale * Map::grad(q.x, da[n].x[2 * half]), scale * Map::grad(q.y, da[n].x[2 * half + 1]));
    }
  }
}

// dv and dk for the chunk at k0: dv = B dS + tril(A B^T)^T dNum, db = V dS^T + dz + tril(dNum V^T + dden)^T A.
template <typename T, typename Map, bool kCausal, int kD>
__device__ __forceinline__ void key_chunk_grads(const LinearParams& p, const Tiles<T, kD>& sm, int64_t b, int64_t h,
                                                int64_t k0, int64_t keys, float sigma) {
  using Sh = linear_tc::Shape<kD>;
  constexpr int kLd = Sh::kLd, kTiles = Sh::kTiles, kSteps = Sh::kSteps, kBlocks = Sh::kChunk / 16;
  const int warp = threadIdx.x / kWarp, lane = threadIdx.x % kWarp, g = lane / 4, t = lane % 4;
  const T* b_rows = sm.b + warp * 16 * kLd;
  const T* v_rows = sm.v + warp * 16 * kLd;
  const int64_t rows[2] = {k0 + warp * 16 + g, k0 + warp * 16 + g + 8};

  // Rows of the mask: key (row of this warp's strip) u is seen by query (column) t' iff t' >= u.
  auto mask_upper = [&](mma::FragC(&block)[2], int qb) {
    if (qb != warp) return;
#pragma unroll
    for (int n = 0; n < 2; ++n) {
#pragma unroll
      for (int r = 0; r < 4; ++r) {
        if (n * 8 + 2 * t + (r & 1) < g + 8 * (r >> 1)) block[n].x[r] = 0.f;
      }
    }
  };
  // Padding keys and rows past the end get zero gradients (their rows of B and V are zero already, but
  // dz reaches db regardless).
  auto store = [&](const RowView& view, const mma::FragC(&grad)[kTiles], bool with_derivative) {
#pragma unroll
    for (int half = 0; half < 2; ++half) {
      const int64_t j = rows[half];
      if (j >= p.shape.k_len) continue;
      T* out = row_ptr<T>(view, b, h, j);
      const T* k_row = row_ptr<const T>(p.k, b, h, j);
#pragma unroll
      for (int n = 0; n < kTiles; ++n) {
        const int c = n * 8 + 2 * t;
        float x = grad[n].x[2 * half], y = grad[n].x[2 * half + 1];
        if (j >= keys) {
          x = y = 0.f;
        } else if (with_derivative) {
          const float2 k = linear_tc::unpack<T>(*reinterpret_cast<const uint32_t*>(k_row + c));
          x = Map::grad(k.x, x);
          y = Map::grad(k.y, y);
        }
        *reinterpret_cast<uint32_t*>(out + c) = mma::pack<T>(x, y);
      }
    }
  };

  {
    mma::FragC dv[kTiles];
    mma::zero(dv);
    mma::mma_shared_a_b<T, kSteps, kTiles>(dv, b_rows, kLd, sm.state, kLd, lane);
    linear_tc::multiply(dv, sigma);
    if constexpr (kCausal) {
      for (int qb = warp; qb < kBlocks; ++qb) {  // 16-query blocks at or right of the diagonal
        mma::FragC w[2];
        mma::zero(w);
        mma::mma_shared_a_bt<T, kSteps>(w, b_rows, kLd, sm.a + qb * 16 * kLd, kLd, lane);
        mask_upper(w, qb);
        mma::mma_p_b<T, 1>(dv, w, sm.dnum + qb * 16 * kLd, kLd, lane);
      }
    }
    store(p.grad_v, dv, false);
  }

  mma::FragC db[kTiles];
  mma::zero(db);
  mma::mma_shared_a_bt<T, kSteps>(db, v_rows, kLd, sm.state, kLd, lane);
  linear_tc::multiply(db, sigma);
#pragma unroll
  for (int n = 0; n < kTiles; ++n) {
#pragma unroll
    for (int r = 0; r < 4; ++r) db[n].x[r] += sm.dz_centred[n * 8 + 2 * t + (r & 1)];
  }
  if constexpr (kCausal) {
    for (int qb = warp; qb < kBlocks; ++qb) {
      mma::FragC m[2];
      mma::zero(m);
      mma::mma_shared_a_bt<T, kSteps>(m, v_rows, kLd, sm.dnum + qb * 16 * kLd, kLd, lane);
#pragma unroll
      for (int n = 0; n < 2; ++n) {
#pragma unroll
        for (int r = 0; r < 4; ++r) {
          const int i = qb * 16 + n * 8 + 2 * t + (r & 1);
          m[n].x[r] += sm.dden[i] + sm.shift[i];  // V was centred on m
        }
      }
      mask_upper(m, qb);
      mma::mma_p_b<T, 1>(db, m, sm.a + qb * 16 * kLd, kLd, lane);
    }
  }
  store(p.grad_k, db, true);
}

// dz + dS m into dz_centred: the vector db takes when V was centred on m (db_j = dS (v_j - m) + dz + dS m,
// the last two summed here in float32 from the unrounded dS). Each row's sum is over the 4 lanes that
// hold its columns. Read after the next barrier.
template <typename T, int kD>
__device__ __forceinline__ void centre_normalizer_grad(const mma::FragC (&ds)[kD / 8], const Tiles<T, kD>& sm,
                                                       const T* centre, int warp, int lane) {
  const int g = lane / 4, t = lane % 4;
#pragma unroll
  for (int half = 0; half < 2; ++half) {
    float sum = 0.f;
    if (centre != nullptr) {
#pragma unroll
      for (int n = 0; n < kD / 8; ++n) {
        const float2 m = linear_tc::unpack<T>(*reinterpret_cast<const uint32_t*>(centre + n * 8 + 2 * t));
        sum += ds[n].x[2 * half] * m.x + ds[n].x[2 * half + 1] * m.y;
      }
    }
    sum += __shfl_xor_sync(0xffffffffu, sum, 1);
    sum += __shfl_xor_sync(0xffffffffu, sum, 2);
    const int row = warp * 16 + g + 8 * half;
    if (t == 0) sm.dz_centred[row] = sm.z[row] + sum;
  }
}

template <typename T, typename Map, bool kCausal, int kD>
__global__ void __launch_bounds__(linear_tc::Shape<kD>::kThreads, 1) backward_kernel(const LinearParams p) {
  using Sh = linear_tc::Shape<kD>;
  constexpr int kLd = Sh::kLd, kChunk = Sh::kChunk, kTiles = Sh::kTiles;
  const Tiles<T, kD> sm;
  const AttentionShape s = p.shape;
  const int64_t bh = blockIdx.x, b = bh / s.heads, h = bh % s.heads;
  const int warp = threadIdx.x / kWarp, lane = threadIdx.x % kWarp;
  const int64_t keys = keys_of(p.key_lengths, b, s.k_len);
  const float scale = static_cast<float>(p.scale);
  auto state_of = [&](const void* base) { return base ? static_cast<const float*>(base) + bh * kD * kD : nullptr; };
  auto vector_of = [&](const void* base) { return base ? static_cast<const float*>(base) + bh * kD : nullptr; };
  // The chunk at c0's centre m: the output row of its last query (the last row, past the end), a
  // weighted mean of the values near the chunk's. Null (no centring) without normalisation.
  auto centre_of = [&](int64_t c0) -> const T* {
    if (!p.normalize || s.q_len == 0) return nullptr;
    return row_ptr<const T>(p.out, b, h, c0 + kChunk - 1 < s.q_len ? c0 + kChunk - 1 : s.q_len - 1);
  };
  auto load_keys = [&](int64_t k0, const T* centre) {
    linear_tc::load_mapped_tile<T, Map, kChunk, kD, Sh::kThreads, 1>(sm.b, kLd, p.k, b, h, k0, keys, 1.f);
    linear_tc::load_centred_tile<T, kChunk, kD>(sm.v, kLd, p.v, b, h, k0, keys, centre);
  };
  auto load_queries = [&](int64_t q0, const T* centre) {
    linear_tc::load_mapped_tile<T, Map, kChunk, kD, Sh::kThreads, 1>(sm.a, kLd, p.q, b, h, q0, s.q_len, scale);
    linear_tc::load_output_grads<T, kD>(sm.dnum, kLd, sm.dden, sm.shift, p, b, h, q0, centre);
  };

  mma::FragC state[kTiles];  // the query block's S, or the key block's dS: rows [16 warp, 16 warp + 16)
  if (blockIdx.y == kQueryBlock) {
    if (p.grad_q.data == nullptr) return;  // dq not asked for (the whole block: no barrier is shared)
    linear_tc::load_state<kD>(state, state_of(p.initial_state), warp, lane);
    linear_tc::load_vector<kD>(sm.z, vector_of(p.initial_normalizer));
    // S += B^T V, z += B^T 1 for the chunk in the tiles; callers put a barrier after z's last reader.
    auto absorb_keys = [&] {
      mma::mma_shared_a_b<T, kChunk / 16, kTiles, true>(state, sm.b + warp * 16, kLd, sm.v, kLd, lane);
      linear_tc::add_column_sums<T, kD>(sm.z, sm.b, kLd, nullptr);
    };
    if constexpr (!kCausal) {
      if (p.saved_state != nullptr) {  // the forward's state over all keys: no pass over the keys
        linear_tc::load_state<kD>(state, state_of(p.saved_state), warp, lane);
        linear_tc::load_vector<kD>(sm.z, vector_of(p.saved_normalizer));
      } else {
        for (int64_t k0 = 0; k0 < keys; k0 += kChunk) {
          __syncthreads();
          load_keys(k0, nullptr);
          __syncthreads();
          absorb_keys();
        }
      }
    }
    for (int64_t q0 = 0; q0 < s.q_len; q0 += kChunk) {
      __syncthreads();
      // S + B^T V needs the values as they are; the centre enters through S_c's rounding and shift.
      if constexpr (kCausal) load_keys(q0, nullptr);
      const T* centre = centre_of(q0);
      linear_tc::load_output_grads<T, kD>(sm.dnum, kLd, sm.dden, sm.shift, p, b, h, q0, centre);
      const float sigma =
          linear_tc::round_state_into<T, kD>(sm.state, kLd, state, warp, lane, sm.slots, sm.z, centre);
      __syncthreads();
      query_chunk_grads<T, Map, kCausal, kD>(p, sm, b, h, q0, sigma);
      if constexpr (kCausal) {
        __syncthreads();  // every warp has read z
        absorb_keys();
      }
    }
    return;
  }

  linear_tc::load_state<kD>(state, state_of(p.grad_final_state), warp, lane);
  linear_tc::load_vector<kD>(sm.z, vector_of(p.grad_final_normalizer));
  // dS += A^T dNum, dz += A^T dden for the chunk in the tiles.
  auto absorb_queries = [&] {
    mma::mma_shared_a_b<T, kChunk / 16, kTiles, true>(state, sm.a + warp * 16, kLd, sm.dnum, kLd, lane);
    linear_tc::add_column_sums<T, kD>(sm.z, sm.a, kLd, sm.dden);
  };
  if constexpr (!kCausal) {
    for (int64_t q0 = 0; q0 < s.q_len; q0 += kChunk) {
      __syncthreads();
      load_queries(q0, nullptr);
      __syncthreads();
      absorb_queries();
    }
  }
  // Causal: the reverse sweep, which without dk, dv still absorbs each chunk's queries (into dS, dz).
  // Non-causal: dS, dz are complete; the key pass is only for dk, dv.
  const bool wants_kv = p.grad_k.data != nullptr;  // the same in every thread: the barriers stay matched
  const int64_t chunks = (kCausal || wants_kv) ? (s.k_len + kChunk - 1) / kChunk : 0;
  const bool key_work = !kCausal || wants_kv;  // within the loop (non-causal: it runs only for dk, dv)
  for (int64_t c = chunks - 1; c >= 0; --c) {
    const int64_t k0 = c * kChunk;
    __syncthreads();
    const T* centre = centre_of(k0);
    if (key_work) {
      load_keys(k0, centre);
      centre_normalizer_grad(state, sm, centre, warp, lane);
    }
    if constexpr (kCausal) load_queries(k0, centre);
    const float sigma =
        key_work ? linear_tc::round_state_into<T, kD>(sm.state, kLd, state, warp, lane, sm.slots) : 1.f;
    __syncthreads();
    if (key_work) key_chunk_grads<T, Map, kCausal, kD>(p, sm, b, h, k0, keys, sigma);
    if constexpr (kCausal) {
      __syncthreads();  // every warp has read dz
      absorb_queries();
    }
  }
  linear_tc::store_state<kD>(state, static_cast<float*>(p.grad_initial_state) + bh * kD * kD, warp, lane);
  // Each thread stores the entries of dz it summed itself (add_column_sums), so no barrier is needed.
  for (int d = threadIdx.x; d < kD; d += blockDim.x)
    static_cast<float*>(p.grad_initial_normalizer)[bh * kD + d] = sm.z[d];
}

}  // namespace linear_backward_tc
}  // namespace cuda
}  // namespace actattn
