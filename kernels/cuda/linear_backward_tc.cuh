// Linear attention backward on tensor cores (float16 / bfloat16, sm_80+; Dk = Dv in {32, 64, 96, 128, 256}
// or (Dk, Dv) = (64, 128), (128, 64): kernels/dispatch.h).
//
// With dnum_i = dO_i / den_i, dden_i = -(dnum_i . o_i) (dnum = dO, dden = 0 without normalisation):
//   da_i = S_i dnum_i + z_i dden_i,   dq_i = scale phi'(q_i) da_i,
//   db_j = dS_j v_j + dz_j,           dk_j = phi'(k_j) db_j,         dv_j = dS_j^T b_j,
// where S_i, z_i are the state a query sees and dS_j = dS_final + sum_{i sees j} a_i dnum_i^T (dz_j
// likewise with dden) is the gradient reaching key j's contribution to the state.
//
// Algorithm: chunk-parallel (flash-linear-attention's `chunk` backward is the model), chunks of 64
// positions whatever D; run() makes the launches, Plan gives their grids and workspace:
//  1. (dq asked, causal or without the saved state) the forward's chunk_states_kernel and sweep: each
//     query chunk's S_c, z_c (causal: the state before it) or the full state, recomputed.
//  2. grad_states_kernel, one block per (batch, head, query chunk), all independent: the chunk's share
//     [dS | dz] = A^T [dNum | dden], one product on mma.sync (dz's column sums in float32).
//  3. the sweep in reverse from the final state's gradient: causal: each key chunk's dS_c, dz_c (what
//     the later chunks' queries send it); the sum over all chunks is the initial state's gradient,
//     and (non-causal) every key chunk's dS.
//  4. query_grads_kernel, one block per (batch, head, query chunk), independent: the query block forms
//     x = dNum S~_c^T + tril(dNum (V - m)^T) B (centred on m, below), w_i = dden_i + dnum_i . m from
//     a_i . x_i, then da = x + w z_c^T + tril(w 1^T) B.
//  5. key_grads_kernel, one block per (batch, head, key chunk), independent: the key block forms
//     dv = B dS_c + tril(A B^T)^T dNum and db = V dS_c^T + dz_c + M^T A.
//     (Two kernels, not one with two roles: ptxas spilled the joint kernel at D = 32 and 64, and the
//     query block needs one tile less.) The masked blocks (M, tril(A B^T)^T) are made 16 rows x 16
//     columns at a time in registers and fed into the next product; blocks wholly masked are skipped.
//     Non-causal: no intra-chunk terms.
// Only what is asked for: without dq (null grad_q) launches 1 and 4 are skipped; without dk, dv (null
// grad_k and grad_v) launch 5. The gradients that are computed are the same bits
// either way.
// Accuracy: da and db are sums of terms that nearly cancel when the values share a large mean m
// (S_i dnum_i ~ z_i (m . dnum_i) ~ -z_i dden_i), and the state enters them rounded to 16 bits. So each
// chunk centres on m = an output row near its end (centre_of): the query block rounds S_c - z_c m^T, the
// key block multiplies dS_c by V - m and adds dz_c + dS_c m, summed in float32 from the float32 dS_c.
// Exact algebra; it moves the cancellation into float32. The query block also takes dnum_i . (o_i - m)
// from the float32 state (a_i . x_i, query_chunk_grads), not from the saved 16-bit output, whose half-ulp
// error z_i (~ N) would multiply. The key block's dden is from the saved output, as FlashAttention's delta
// is: there the errors of many rows average out (dk within 2x of values of mean 0 on an H200 at N = 16 K),
// and dnum . v_j + dden cancels in its products as in exact arithmetic because dden is taken from the
// rounded dnum. In the emulation (values ~ N(128, 1), float16, N = 512): dq's error 0.07 %, against 16 %
// (causal) and 84 % (non-causal, D = 128) without centring.
// Float16's range: S_c or dS_c is divided by a power of two before it is rounded into shared memory, and
// the products with it are multiplied back in float32 (linear_tc::state_divisor), so a state past 65504
// is no inf and a gradient state ~ 1 / sqrt(N) is no subnormal; dnum = dO / den (~ 1 / N) is multiplied
// by a power of two rho ~ den (linear_tc::output_grad_factor) and the products with it divided by rho.
// Memory: workspace of B H (2 ceil(N / 64) + 1) (Dk Dv + Dk) floats (the forward's per-chunk states, the
// full state, the per-chunk gradient states): about 2 N D per (batch, head) at D = 64, 4 N D at D = 128;
// at D = 256 one value group's (Dv = 64: 2 N D) and the dq, dk sums (2 N D) and state slices.
// Shared tiles of a key block: A, B, V, dNum (64 x (D + 8) each) and the state (D x (D + 8)), 46 KiB
// at D = 64 and 104 KiB at D = 128 (A100 and H100-class GPUs; sm_86/89 grant 99 KiB and get the 87-KiB
// compact layouts of Tiles at D = 128); a query block the same (its A for w only when normalising).
// Recomputes phi(q), phi(k) and the states; reads the forward's output and den.
// Dk = 256 runs as value groups (run): a block holding the 256 x 256 state tile (132 KiB) beside four
// chunk tiles fits no GPU, so the launches above run once per 64 value columns c at (Dk, Dv) = (256, 64)
// (123 KiB: A100 and H100-class GPUs; sm_86/89 get the 96-KiB compact layouts of Tiles, whose key block
// holds half the state's rows at a time; ptxas: 186-232 registers, no spill). Columns c of
// the output are a linear attention of their own with the same den, o[:, c] = A S[:, c] / den, whose
// exact backward (its own dden^c = -dnum[:, c] . o[:, c], dz^c = A^T dden^c and centre m[c]) gives
// dv[:, c], the state gradient's columns c, and shares of dq, dk and of the initial normaliser's
// gradient that sum to theirs. The states' column slices are copied into the workspace and out of it
// (copy_state_columns_kernel); the final normaliser's gradient enters the first group only.
// dq and dk sum the groups' shares in float32 (GroupSums: 2 N Dk floats more per (batch, head)), group
// after group, so the sums are the same bits every run; the last group applies phi' and rounds. Against
// one 256-wide pass it recomputes phi(q), phi(k) and tril(A B^T) per group.
#pragma once

#include "linear_forward_tc.cuh"
#include "linear_tc_common.cuh"

namespace actattn {
namespace cuda {
namespace linear_backward_tc {

// Shared memory of the dq and the dk, dv kernels (Tiles): chunk tiles B, V, dNum, A, the state, and
// float32 vectors; A is placed last, after the 16-byte aligned floats.
// The compact layouts, for GPUs that grant a block less than the full one needs (sm_86/89 and sm_120,
// 99 KiB, at D = 128, which needs 104, and at Dk = 256, whose value groups need 123): the key block's V
// shares B's memory (V is loaded once the dv products, the only ones that read B, are done) and the
// query block's A shares the state's (A is loaded once the one product that reads the state is done).
// 87 KiB at D = 128; each of the two loads then waits for a barrier instead of overlapping the earlier
// products. At Dk = 256 the key block's state tile also holds half of dS_c's rows at a time
// (kValuesOverKeysHalfState): dv takes the first half's product, then the second's; db, whose column
// halves are those halves' products, the second's and then the first's, reloaded (three loads of a half,
// each after a barrier); 96 KiB, and the query block's 90.
enum class TileLayout { kFull, kValuesOverKeys, kQueriesOverState, kValuesOverKeysHalfState };

constexpr bool values_over_keys(TileLayout layout) {
  return layout == TileLayout::kValuesOverKeys || layout == TileLayout::kValuesOverKeysHalfState;
}

// Rows of the state tile: Dk, or half of them.
template <int kDk, TileLayout kLayout>
constexpr int state_tile_rows() {
  return kLayout == TileLayout::kValuesOverKeysHalfState ? kDk / 2 : kDk;
}

template <int kDk, int kDv, TileLayout kLayout>
constexpr int floats_end_bytes() {
  using Sh = linear_tc::Shape<kDk, kDv>;
  const int keys_and_values = values_over_keys(kLayout)
                                  ? (Sh::kKeyTileElems > Sh::kValueTileElems ? Sh::kKeyTileElems : Sh::kValueTileElems)
                                  : Sh::kKeyTileElems + Sh::kValueTileElems;
  return (keys_and_values + Sh::kValueTileElems + state_tile_rows<kDk, kLayout>() * Sh::kLdV) * 2 +
         (2 * kDk + 2 * Sh::kChunk + 4) * static_cast<int>(sizeof(float));
}

template <int kDk, int kDv, TileLayout kLayout = TileLayout::kFull>
constexpr int chunk_grads_shared_bytes() {
  return floats_end_bytes<kDk, kDv, kLayout>() +
         (kLayout == TileLayout::kQueriesOverState ? 0 : linear_tc::Shape<kDk, kDv>::kKeyTileElems * 2);
}

// The shared memory of the smallest GPUs with the tensor-core kernels (sm_86/89, sm_120): 99 KiB.
constexpr int kLeastSharedBytesOptin = 99 * 1024;

// Whether the pair of head dims has the compact layouts: only where the full one does not fit everywhere.
template <int kDk, int kDv>
constexpr bool has_compact_layouts() {
  return chunk_grads_shared_bytes<kDk, kDv>() > kLeastSharedBytesOptin;
}

// The key block's compact layout (V over B alone would leave Dk = 256 at 116 KiB).
template <int kDk>
constexpr TileLayout compact_key_layout() {
  return kDk > 128 ? TileLayout::kValuesOverKeysHalfState : TileLayout::kValuesOverKeys;
}

// Value columns per group of the backward's launches: 64 at Dk = 256 (the value groups), else all.
constexpr int64_t value_group_columns(int64_t qk_dim, int64_t v_dim) { return qk_dim > 128 ? 64 : v_dim; }
template <int kDk, int kDv>
constexpr int value_group_columns() {
  return static_cast<int>(value_group_columns(kDk, kDv));
}

// What a GPU must grant a block for the backward's dq and dk, dv kernels at these head dims (of a value
// group's launches at Dk = 256).
template <int kDk, int kDvAll>
constexpr int least_chunk_grads_shared_bytes() {
  constexpr int kDv = value_group_columns<kDk, kDvAll>();
  if constexpr (has_compact_layouts<kDk, kDv>()) {
    constexpr int keys = chunk_grads_shared_bytes<kDk, kDv, compact_key_layout<kDk>()>();
    constexpr int queries = chunk_grads_shared_bytes<kDk, kDv, TileLayout::kQueriesOverState>();
    return keys > queries ? keys : queries;
  } else {
    return chunk_grads_shared_bytes<kDk, kDv>();
  }
}

template <int kDk, int kDv>
constexpr int grad_states_shared_bytes() {
  using Sh = linear_tc::Shape<kDk, kDv>;
  return (Sh::kKeyTileElems + Sh::kValueTileElems) * 2 + 2 * Sh::kChunk * static_cast<int>(sizeof(float));
}

template <typename T, int kDk, int kDv, TileLayout kLayout = TileLayout::kFull>
struct Tiles {
  using Sh = linear_tc::Shape<kDk, kDv>;
  T* b;         // phi(K) of a chunk
  T* v;         // V of a chunk (the key block's centred on m)
  T* dnum;      // dO / den of a chunk
  T* state;     // S_c (query block) or dS_c (key block, or half of its rows), rounded
  float* z;     // query block: z_c
  float* dz_centred;  // key block: dz_c + dS_c m
  float* dden;   // dden of a chunk's rows
  float* shift;  // dnum . m of a chunk's rows, for the chunk's centre m
  float* slots;  // one float per warp (linear_tc::state_divisor), padded to 4
  T* a;          // scale phi(Q) of a chunk (the dq block's only when normalising)

  __device__ Tiles() {
    constexpr bool kValuesOverKeys = values_over_keys(kLayout);
    b = dynamic_shared<T>();
    v = kValuesOverKeys ? b : b + Sh::kKeyTileElems;
    dnum = v + (kValuesOverKeys && Sh::kKeyTileElems > Sh::kValueTileElems ? Sh::kKeyTileElems : Sh::kValueTileElems);
    state = dnum + Sh::kValueTileElems;
    z = reinterpret_cast<float*>(state + state_tile_rows<kDk, kLayout>() * Sh::kLdV);
    dz_centred = z + kDk;
    dden = dz_centred + kDk;
    shift = dden + Sh::kChunk;
    slots = shift + Sh::kChunk;
    static_assert(floats_end_bytes<kDk, kDv, kLayout>() % 16 == 0 && Sh::kWarps <= 4, "A's rows 16-byte aligned");
    static_assert(kLayout != TileLayout::kQueriesOverState || Sh::kStateElems >= Sh::kKeyTileElems,
                  "A fits in the state's memory");
    a = kLayout == TileLayout::kQueriesOverState ? state : reinterpret_cast<T*>(slots + 4);
  }
};

// Grids and workspace of one backward call. Workspace (floats): the forward's per-chunk states
// (launch 1), the full state (non-causal without the saved one), the per-chunk gradient states.
struct Plan {
  static constexpr int kChunk = linear_forward_tc::kChunk;  // launch 1 is the forward's: the same chunks
  static_assert(kChunk == linear_tc::Shape<32, 32>::kChunk, "the blocks' strips cover a chunk");
  int64_t heads_total, query_chunks, key_chunks, entries;

  ACTATTN_HOST_DEVICE explicit Plan(const LinearParams& p)
      : heads_total(p.shape.batch * p.shape.heads),
        query_chunks((p.shape.q_len + kChunk - 1) / kChunk),
        key_chunks((p.shape.k_len + kChunk - 1) / kChunk),
        entries(p.shape.qk_dim * p.shape.v_dim + p.shape.qk_dim) {}

  int64_t workspace_elems() const { return heads_total * (key_chunks + 1 + query_chunks) * entries; }
  ACTATTN_HOST_DEVICE float* forward_states(float* workspace) const { return workspace; }
  ACTATTN_HOST_DEVICE float* full_state(float* workspace) const {
    return workspace + heads_total * key_chunks * entries;
  }
  ACTATTN_HOST_DEVICE float* grad_states(float* workspace) const {
    return full_state(workspace) + heads_total * entries;
  }
  // Whether launch 1 runs: dq is asked and the query blocks have no state to read.
  static bool needs_forward_states(const LinearParams& p) {
    return p.grad_q.data != nullptr && (p.causal || p.saved_state == nullptr);
  }
  linear_tc::ChunkSweep forward_sweep(const LinearParams& p, float* workspace) const {
    float* full = full_state(workspace);
    return {forward_states(workspace), heads_total, key_chunks, p.shape.qk_dim * p.shape.v_dim, p.shape.qk_dim,
            p.initial_state, p.initial_normalizer, full, full + heads_total * p.shape.qk_dim * p.shape.v_dim,
            /*reverse=*/false, /*exclusive=*/p.causal};
  }
  linear_tc::ChunkSweep grad_sweep(const LinearParams& p, float* workspace) const {
    return {grad_states(workspace), heads_total, query_chunks, p.shape.qk_dim * p.shape.v_dim, p.shape.qk_dim,
            p.grad_final_state, p.grad_final_normalizer, p.grad_initial_state, p.grad_initial_normalizer,
            /*reverse=*/true, /*exclusive=*/p.causal};
  }
  dim3 grad_states_grid() const { return dim3(static_cast<unsigned>(heads_total * query_chunks)); }
  dim3 query_grads_grid() const { return dim3(static_cast<unsigned>(heads_total * query_chunks)); }
  dim3 key_grads_grid() const { return dim3(static_cast<unsigned>(heads_total * key_chunks)); }
};

// Where the dq and dk kernels of the value groups (Dk = 256) sum the groups' shares: float32 (B H, N, Dk),
// the first group writing, the later ones adding, the last one applying phi' and storing the gradient.
// Null (a single group: the kernels store the gradient directly) below Dk = 256.
struct GroupSums {
  float* dq = nullptr;
  float* dk = nullptr;
  bool first = true, last = true;
};

// Adds this group's share of two adjacent entries to the earlier groups' at `sum`; true with the total on
// the last group, else stores the partial sum and returns false.
__device__ __forceinline__ bool sum_group_share(float2& share, float* sum, const GroupSums& sums) {
  if (!sums.first) {
    const float2 earlier = *reinterpret_cast<const float2*>(sum);
    share.x += earlier.x;
    share.y += earlier.y;
  }
  if (sums.last) return true;
  *reinterpret_cast<float2*>(sum) = share;
  return false;
}

// Launch 2: the share [dS | dz] = A^T [dNum | dden] of one query chunk into the gradient states
// (shared memory: grad_states_shared_bytes).
template <typename T, typename Map, int kDk, int kDv>
__global__ void __launch_bounds__(linear_tc::Shape<kDk, kDv>::kThreads) grad_states_kernel(const LinearParams p,
                                                                                           float* workspace) {
  using Sh = linear_tc::Shape<kDk, kDv>;
  constexpr int kLdK = Sh::kLdK, kLdV = Sh::kLdV, kChunk = Sh::kChunk, kValueTiles = Sh::kValueTiles;
  T* a_tile = dynamic_shared<T>();
  T* dnum_tile = a_tile + Sh::kKeyTileElems;
  float* dden = reinterpret_cast<float*>(dnum_tile + Sh::kValueTileElems);
  float* unused_shift = dden + kChunk;

  const Plan plan(p);
  const linear_forward_tc::ChunkBlock at(plan.query_chunks, p.shape.heads);
  const int64_t bh = at.bh, b = at.b, h = at.h, chunk = at.chunk, q0 = at.row0;
  const int warp = threadIdx.x / kWarp, lane = threadIdx.x % kWarp, g = lane / 4, t = lane % 4;

  linear_tc::load_mapped_tile<T, Map, kChunk, kDk, Sh::kThreads, 4>(a_tile, kLdK, p.q, b, h, q0, p.shape.q_len,
                                                                    static_cast<float>(p.scale));
  const float rho = linear_tc::load_output_grads<T, kChunk, kDv, Sh::kThreads, 4>(dnum_tile, kLdV, dden, unused_shift,
                                                                                  p, b, h, q0, nullptr);
  __syncthreads();

  float* share = plan.grad_states(workspace) + (bh * plan.query_chunks + chunk) * plan.entries;
#pragma unroll 1
  for (int strip = warp; strip < kDk / 16; strip += Sh::kWarps) {  // 16 rows of dS each
    mma::FragC acc[kValueTiles];
    mma::zero(acc);
    mma::mma_shared_a_b<T, kChunk / 16, kValueTiles, true>(acc, a_tile + strip * 16, kLdK, dnum_tile, kLdV, lane);
    linear_tc::multiply(acc, 1.f / rho);
#pragma unroll
    for (int half = 0; half < 2; ++half) {
      float* row = share + (strip * 16 + g + 8 * half) * kDv;
#pragma unroll
      for (int n = 0; n < kValueTiles; ++n)
        *reinterpret_cast<float2*>(row + n * 8 + 2 * t) = make_float2(acc[n].x[2 * half], acc[n].x[2 * half + 1]);
    }
  }
  linear_tc::weighted_column_sums<T, kChunk, kDk>(share + kDk * kDv, a_tile, kLdK, dden, 1.f / rho);
}

// dq for the chunk at q0, everything times the chunk's rho (load_output_grads) until the end. With the
// centre m (S_c and V centred on it):
//   x_i = (S_i - z_i m^T) dnum_i = S~_c dnum_i + sum_{j <= i in the chunk} b_j (dnum_i . (v_j - m)),
//   w_i = dden_i + dnum_i . m = -dnum_i . (o_i - m) = -(a_i . x_i - eps dnum_i . m) / den_i,
//   da_i = x_i + z_i w_i,   z_i = z_c + sum_{j <= i in the chunk} b_j.
// w_i is formed from a_i . x_i (since a_i . x_i = dnum_i . (num_i - m (den_i - eps))), not from the
// saved output: rounded to 16 bits, o_i - m was wrong by half an ulp of o, and z_i (~ N) times that
// swamped da when values share a mean (dq 57 % off at N = 4 K, values ~ N(4, 1), bfloat16, on an
// H200). The CPU backward takes g . o the same way.
template <typename T, typename Map, bool kCausal, int kDk, int kDv, TileLayout kLayout>
__device__ __forceinline__ void query_chunk_grads(const LinearParams& p, const Tiles<T, kDk, kDv, kLayout>& sm,
                                                  int64_t b, int64_t h, int64_t q0, float sigma, float rho,
                                                  const GroupSums& sums) {
  using Sh = linear_tc::Shape<kDk, kDv>;
  constexpr int kLdK = Sh::kLdK, kLdV = Sh::kLdV, kKeyTiles = Sh::kKeyTiles, kValueSteps = Sh::kValueSteps;
  const int warp = threadIdx.x / kWarp, lane = threadIdx.x % kWarp, g = lane / 4, t = lane % 4;
  const T* dnum_rows = sm.dnum + warp * 16 * kLdV;
  // Masks a 16 x 16 block of the diagonal: query (row) r sees key (column) u iff u <= r.
  auto mask_lower = [&](mma::FragC(&block)[2], int kb) {
    if (kb != warp) return;
#pragma unroll
    for (int n = 0; n < 2; ++n) {
#pragma unroll
      for (int r = 0; r < 4; ++r) {
        if (n * 8 + 2 * t + (r & 1) > g + 8 * (r >> 1)) block[n].x[r] = 0.f;
      }
    }
  };

  // -1 / den_i of the lane's two rows (0 past the end), formed before the accumulators are live: the
  // division's slow path is a call, around which ptxas spilled them.
  float minus_inv_den[2];
#pragma unroll
  for (int half = 0; half < 2; ++half) {
    const int64_t i = q0 + warp * 16 + g + 8 * half;
    minus_inv_den[half] =
        p.normalize && i < p.shape.q_len
            ? -1.f / static_cast<const float*>(p.denominator.data)[(b * p.shape.heads + h) * p.shape.q_len + i]
            : 0.f;
  }

  mma::FragC da[kKeyTiles];  // x, then da
  mma::zero(da);
  mma::mma_shared_a_bt<T, kValueSteps>(da, dnum_rows, kLdV, sm.state, kLdV, lane);
  linear_tc::multiply(da, sigma);
  constexpr bool kQueriesOverState = kLayout == TileLayout::kQueriesOverState;
  if constexpr (kQueriesOverState) {
    if (p.normalize) {
      __syncthreads();  // every warp is done with the state, whose memory A takes
      linear_tc::load_mapped_tile<T, Map, Sh::kChunk, kDk, Sh::kThreads, 4>(sm.a, kLdK, p.q, b, h, q0, p.shape.q_len,
                                                                            static_cast<float>(p.scale));
    }
  }
  if constexpr (kCausal) {
#pragma unroll 1
    for (int kb = 0; kb <= warp; ++kb) {
      mma::FragC m[2];
      mma::zero(m);
      mma::mma_shared_a_bt<T, kValueSteps>(m, dnum_rows, kLdV, sm.v + kb * 16 * kLdV, kLdV, lane);
      mask_lower(m, kb);
      mma::mma_p_b<T, 1>(da, m, sm.b + kb * 16 * kLdK, kLdK, lane);
    }
  }

  if (p.normalize) {
    if constexpr (kQueriesOverState) __syncthreads();  // A, loaded above, complete
    float w[2];
#pragma unroll
    for (int half = 0; half < 2; ++half) {
      const int row = warp * 16 + g + 8 * half;
      const T* a_row = sm.a + row * kLdK;
      float ax = 0.f;
#pragma unroll
      for (int n = 0; n < kKeyTiles; ++n) {
        const float2 a = linear_tc::unpack<T>(*reinterpret_cast<const uint32_t*>(a_row + n * 8 + 2 * t));
        ax += a.x * da[n].x[2 * half] + a.y * da[n].x[2 * half + 1];
      }
      ax += __shfl_xor_sync(0xffffffffu, ax, 1);
      ax += __shfl_xor_sync(0xffffffffu, ax, 2);
      w[half] = minus_inv_den[half] * (ax - static_cast<float>(p.eps) * sm.shift[row]);
    }
#pragma unroll
    for (int n = 0; n < kKeyTiles; ++n) {
#pragma unroll
      for (int r = 0; r < 4; ++r) da[n].x[r] += w[r >> 1] * sm.z[n * 8 + 2 * t + (r & 1)];
    }
    if constexpr (kCausal) {
#pragma unroll 1
      for (int kb = 0; kb <= warp; ++kb) {  // w_i times the chunk's keys up to i
        mma::FragC m[2];
#pragma unroll
        for (int n = 0; n < 2; ++n) {
#pragma unroll
          for (int r = 0; r < 4; ++r) m[n].x[r] = w[r >> 1];
        }
        mask_lower(m, kb);
        mma::mma_p_b<T, 1>(da, m, sm.b + kb * 16 * kLdK, kLdK, lane);
      }
    }
  }

  const float scale = static_cast<float>(p.scale) / rho;
#pragma unroll
  for (int half = 0; half < 2; ++half) {
    const int64_t i = q0 + warp * 16 + g + 8 * half;
    if (i >= p.shape.q_len) continue;
    const T* q_row = row_ptr<const T>(p.q, b, h, i);
    T* dq_row = row_ptr<T>(p.grad_q, b, h, i);
    float* sum_row = kDk > 128 ? sums.dq + ((b * p.shape.heads + h) * p.shape.q_len + i) * kDk : nullptr;
#pragma unroll
    for (int n = 0; n < kKeyTiles; ++n) {
      const int c = n * 8 + 2 * t;
      float2 da_pair = make_float2(da[n].x[2 * half], da[n].x[2 * half + 1]);
      float factor = scale;
      if constexpr (kDk > 128) {  // value groups: the shares summed at rho's scale removed
        da_pair = make_float2(da_pair.x / rho, da_pair.y / rho);
        factor = static_cast<float>(p.scale);
        if (!sum_group_share(da_pair, sum_row + c, sums)) continue;
      }
      const float2 q = linear_tc::unpack<T>(*reinterpret_cast<const uint32_t*>(q_row + c));
      *reinterpret_cast<uint32_t*>(dq_row + c) =
          mma::pack<T>(factor * Map::grad(q.x, da_pair.x), factor * Map::grad(q.y, da_pair.y));
    }
  }
}

// dv and dk for the chunk at k0: dv = B dS + tril(A B^T)^T dNum, db = V dS^T + dz + tril(dNum V^T + dden)^T A.
// The intra-chunk terms (causal) are formed times the chunk's rho (load_output_grads), so the state's
// terms are brought to that scale first and the sums divided by rho at the end.
// The compact layouts load V, centred on `centre`, once dv is done; kValuesOverKeysHalfState loads the
// halves of dS_c's rows (float32 at `ds`) in turn, the first one already in the state tile (sigma its).
template <typename T, typename Map, bool kCausal, int kDk, int kDv, TileLayout kLayout>
__device__ __forceinline__ void key_chunk_grads(const LinearParams& p, const Tiles<T, kDk, kDv, kLayout>& sm,
                                                int64_t b, int64_t h, int64_t k0, int64_t keys, const T* centre,
                                                const float* ds, float sigma, float rho, const GroupSums& sums) {
  using Sh = linear_tc::Shape<kDk, kDv>;
  constexpr int kLdK = Sh::kLdK, kLdV = Sh::kLdV, kKeyTiles = Sh::kKeyTiles, kValueTiles = Sh::kValueTiles;
  constexpr int kKeySteps = Sh::kKeySteps, kValueSteps = Sh::kValueSteps, kBlocks = Sh::kChunk / 16;
  const int warp = threadIdx.x / kWarp, lane = threadIdx.x % kWarp, g = lane / 4, t = lane % 4;
  const T* b_rows = sm.b + warp * 16 * kLdK;
  const T* v_rows = sm.v + warp * 16 * kLdV;
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
  auto store = [&](const RowView& view, const auto& grad, bool with_derivative) {
    constexpr int kTiles = std::extent_v<std::remove_reference_t<decltype(grad)>>;
#pragma unroll
    for (int half = 0; half < 2; ++half) {
      const int64_t j = rows[half];
      if (j >= p.shape.k_len) continue;
      T* out = row_ptr<T>(view, b, h, j);
      const T* k_row = row_ptr<const T>(p.k, b, h, j);
      float* sum_row = kDk > 128 ? sums.dk + ((b * p.shape.heads + h) * p.shape.k_len + j) * kDk : nullptr;
#pragma unroll
      for (int n = 0; n < kTiles; ++n) {
        const int c = n * 8 + 2 * t;
        float x = grad[n].x[2 * half], y = grad[n].x[2 * half + 1];
        if (j >= keys) {
          x = y = 0.f;
        } else if (with_derivative) {
          if constexpr (kDk > 128) {  // value groups: db's shares summed (dv's columns are the group's own)
            float2 db_pair = make_float2(x, y);
            if (!sum_group_share(db_pair, sum_row + c, sums)) continue;
            x = db_pair.x;
            y = db_pair.y;
          }
          const float2 k = linear_tc::unpack<T>(*reinterpret_cast<const uint32_t*>(k_row + c));
          x = Map::grad(k.x, x);
          y = Map::grad(k.y, y);
        }
        *reinterpret_cast<uint32_t*>(out + c) = mma::pack<T>(x, y);
      }
    }
  };

  constexpr bool kHalfState = kLayout == TileLayout::kValuesOverKeysHalfState;
  constexpr int kHalfRows = kDk / 2;
  // Half of dS_c's rows into the state tile once every warp is done with it; their sigma.
  auto load_state_half = [&](int half) {
    __syncthreads();
    return linear_tc::round_state_tile<T, kHalfRows, kDv, Sh::kThreads>(sm.state, kLdV, ds + half * kHalfRows * kDv,
                                                                       nullptr, nullptr, sm.slots);
  };

  {
    mma::FragC dv[kValueTiles];
    mma::zero(dv);
    if constexpr (kHalfState) {  // each half's product at its own sigma (powers of two: exact)
      mma::mma_shared_a_b<T, kHalfRows / 16, kValueTiles>(dv, b_rows, kLdK, sm.state, kLdV, lane);
      linear_tc::multiply(dv, sigma);
      sigma = load_state_half(1);
      linear_tc::multiply(dv, 1.f / sigma);
      mma::mma_shared_a_b<T, kHalfRows / 16, kValueTiles>(dv, b_rows + kHalfRows, kLdK, sm.state, kLdV, lane);
    } else {
      mma::mma_shared_a_b<T, kKeySteps, kValueTiles>(dv, b_rows, kLdK, sm.state, kLdV, lane);
    }
    linear_tc::multiply(dv, sigma * rho);
    if constexpr (kCausal) {
      for (int qb = warp; qb < kBlocks; ++qb) {  // 16-query blocks at or right of the diagonal
        mma::FragC w[2];
        mma::zero(w);
        mma::mma_shared_a_bt<T, kKeySteps>(w, b_rows, kLdK, sm.a + qb * 16 * kLdK, kLdK, lane);
        mask_upper(w, qb);
        mma::mma_p_b<T, 1>(dv, w, sm.dnum + qb * 16 * kLdV, kLdV, lane);
      }
    }
    linear_tc::multiply(dv, 1.f / rho);
    store(p.grad_v, dv, false);
  }
  if constexpr (values_over_keys(kLayout)) {
    __syncthreads();  // every warp is done with B, whose memory V takes
    linear_tc::load_centred_tile<T, Sh::kChunk, kDv, Sh::kThreads, 4>(sm.v, kLdV, p.v, b, h, k0, keys, centre);
    __syncthreads();
  }

  mma::FragC db[kKeyTiles];
  mma::zero(db);
  if constexpr (kHalfState) {  // db's columns of the half in the tile (dv's last), then the first half's
    constexpr int kHalfTiles = kKeyTiles / 2;
    auto& second = mma::tiles_of<kHalfTiles, kHalfTiles>(db);
    mma::mma_shared_a_bt<T, kValueSteps>(second, v_rows, kLdV, sm.state, kLdV, lane);
    linear_tc::multiply(second, sigma * rho);
    sigma = load_state_half(0);
    auto& first = mma::tiles_of<0, kHalfTiles>(db);
    mma::mma_shared_a_bt<T, kValueSteps>(first, v_rows, kLdV, sm.state, kLdV, lane);
    linear_tc::multiply(first, sigma * rho);
  } else {
    mma::mma_shared_a_bt<T, kValueSteps>(db, v_rows, kLdV, sm.state, kLdV, lane);
    linear_tc::multiply(db, sigma * rho);
  }
#pragma unroll
  for (int n = 0; n < kKeyTiles; ++n) {
#pragma unroll
    for (int r = 0; r < 4; ++r) db[n].x[r] += rho * sm.dz_centred[n * 8 + 2 * t + (r & 1)];
  }
  if constexpr (kCausal) {
    for (int qb = warp; qb < kBlocks; ++qb) {
      mma::FragC m[2];
      mma::zero(m);
      mma::mma_shared_a_bt<T, kValueSteps>(m, v_rows, kLdV, sm.dnum + qb * 16 * kLdV, kLdV, lane);
#pragma unroll
      for (int n = 0; n < 2; ++n) {
#pragma unroll
        for (int r = 0; r < 4; ++r) {
          const int i = qb * 16 + n * 8 + 2 * t + (r & 1);
          m[n].x[r] += sm.dden[i] + sm.shift[i];  // V was centred on m
        }
      }
      mask_upper(m, qb);
      mma::mma_p_b<T, 1>(db, m, sm.a + qb * 16 * kLdK, kLdK, lane);
    }
  }
  linear_tc::multiply(db, 1.f / rho);
  store(p.grad_k, db, true);
}

// The chunk's centre m: the output row of its last query, a weighted mean of the values near the chunk's;
// past the last query or the last real key, that one's (so a padded sequence's chunks centre as the
// unpadded sequence's do, and its gradients are the same bits). Null (no centring) without normalisation
// or without keys.
template <typename T>
__device__ __forceinline__ const T* centre_of(const LinearParams& p, const linear_forward_tc::ChunkBlock& at) {
  const int64_t keys = keys_of(p.key_lengths, at.b, p.shape.k_len);
  if (!p.normalize || p.shape.q_len == 0 || keys == 0) return nullptr;
  int64_t row = at.row0 + Plan::kChunk - 1;
  if (row > p.shape.q_len - 1) row = p.shape.q_len - 1;
  if (row > keys - 1) row = keys - 1;
  return row_ptr<const T>(p.out, at.b, at.h, row);
}

// Launch 4, dq: one query chunk (shared memory: chunk_grads_shared_bytes).
// kLayout: kFull, or kQueriesOverState where the GPU grants less shared memory (Tiles).
template <typename T, typename Map, bool kCausal, int kDk, int kDv, TileLayout kLayout = TileLayout::kFull>
__global__ void __launch_bounds__(linear_tc::Shape<kDk, kDv>::kThreads, linear_tc::Shape<kDk, kDv>::kChunkGradsMinBlocks)
    query_grads_kernel(const LinearParams p, float* workspace, const GroupSums sums) {
  using Sh = linear_tc::Shape<kDk, kDv>;
  constexpr int kLdK = Sh::kLdK, kLdV = Sh::kLdV, kChunk = Sh::kChunk, kThreads = Sh::kThreads;
  const Tiles<T, kDk, kDv, kLayout> sm;
  const Plan plan(p);
  const linear_forward_tc::ChunkBlock at(plan.query_chunks, p.shape.heads);
  const int64_t bh = at.bh, b = at.b, h = at.h, c0 = at.row0;
  const T* centre = centre_of<T>(p, at);

  if constexpr (kCausal) {
    const int64_t keys = keys_of(p.key_lengths, b, p.shape.k_len);
    linear_tc::load_mapped_tile<T, Map, kChunk, kDk, kThreads, 4>(sm.b, kLdK, p.k, b, h, c0, keys, 1.f);
    linear_tc::load_centred_tile<T, kChunk, kDv, kThreads, 4>(sm.v, kLdV, p.v, b, h, c0, keys, centre);
  }
  if (kLayout == TileLayout::kFull && p.normalize) {  // a_i, for w_i (the compact layout's: later)
    linear_tc::load_mapped_tile<T, Map, kChunk, kDk, kThreads, 4>(sm.a, kLdK, p.q, b, h, c0, p.shape.q_len,
                                                                  static_cast<float>(p.scale));
  }
  const float rho =
      linear_tc::load_output_grads<T, kChunk, kDv, Sh::kThreads, Sh::kChunkGradsRowsInFlight>(
          sm.dnum, kLdV, sm.dden, sm.shift, p, b, h, c0, centre);
  // Causal: the state before the chunk; non-causal: the full state, saved by the forward or launch 1's.
  constexpr int64_t kStateSize = static_cast<int64_t>(kDk) * kDv;
  const float* state = kCausal ? plan.forward_states(workspace) + (bh * plan.key_chunks + at.chunk) * plan.entries
                       : p.saved_state != nullptr ? static_cast<const float*>(p.saved_state) + bh * kStateSize
                                                  : plan.full_state(workspace) + bh * kStateSize;
  const float* z = kCausal ? state + kStateSize
                   : p.saved_state != nullptr ? static_cast<const float*>(p.saved_normalizer) + bh * kDk
                                              : plan.full_state(workspace) + plan.heads_total * kStateSize + bh * kDk;
  linear_tc::load_vector<kDk>(sm.z, z);
  const float sigma =
      linear_tc::round_state_tile<T, kDk, kDv, kThreads>(sm.state, kLdV, state, z, centre, sm.slots);
  query_chunk_grads<T, Map, kCausal, kDk, kDv>(p, sm, b, h, c0, sigma, rho, sums);
}

// Launch 5, dk and dv: one key chunk (shared memory: chunk_grads_shared_bytes).
// kLayout: kFull, or compact_key_layout where the GPU grants less shared memory (Tiles).
template <typename T, typename Map, bool kCausal, int kDk, int kDv, TileLayout kLayout = TileLayout::kFull>
__global__ void __launch_bounds__(linear_tc::Shape<kDk, kDv>::kThreads, linear_tc::Shape<kDk, kDv>::kChunkGradsMinBlocks)
    key_grads_kernel(const LinearParams p, float* workspace, const GroupSums sums) {
  using Sh = linear_tc::Shape<kDk, kDv>;
  constexpr int kLdK = Sh::kLdK, kLdV = Sh::kLdV, kChunk = Sh::kChunk, kThreads = Sh::kThreads;
  const Tiles<T, kDk, kDv, kLayout> sm;
  const Plan plan(p);
  const linear_forward_tc::ChunkBlock at(plan.key_chunks, p.shape.heads);
  const int64_t bh = at.bh, b = at.b, h = at.h, c0 = at.row0;
  const int warp = threadIdx.x / kWarp, lane = threadIdx.x % kWarp;
  const int64_t keys = keys_of(p.key_lengths, b, p.shape.k_len);
  const T* centre = centre_of<T>(p, at);

  linear_tc::load_mapped_tile<T, Map, kChunk, kDk, kThreads, 4>(sm.b, kLdK, p.k, b, h, c0, keys, 1.f);
  if constexpr (kLayout == TileLayout::kFull) {
    linear_tc::load_centred_tile<T, kChunk, kDv, kThreads, 4>(sm.v, kLdV, p.v, b, h, c0, keys, centre);
  }
  float rho = 1.f;  // the dnum tile's factor; non-causal blocks have no intra-chunk terms
  if constexpr (kCausal) {
    linear_tc::load_mapped_tile<T, Map, kChunk, kDk, kThreads, 4>(sm.a, kLdK, p.q, b, h, c0, p.shape.q_len,
                                                                  static_cast<float>(p.scale));
    rho = linear_tc::load_output_grads<T, kChunk, kDv, Sh::kThreads, Sh::kChunkGradsRowsInFlight>(
        sm.dnum, kLdV, sm.dden, sm.shift, p, b, h, c0, centre);
  }
  // Causal: what the later chunks send this one (launch 3); non-causal: the total, the initial state's.
  constexpr int64_t kStateSize = static_cast<int64_t>(kDk) * kDv;
  const float* ds = kCausal ? plan.grad_states(workspace) + (bh * plan.query_chunks + at.chunk) * plan.entries
                            : static_cast<const float*>(p.grad_initial_state) + bh * kStateSize;
  const float* dz = kCausal ? ds + kStateSize : static_cast<const float*>(p.grad_initial_normalizer) + bh * kDk;
  // dz + dS m: the vector db takes when V is centred on m (db_j = dS (v_j - m) + dz + dS m), summed in
  // float32 from the unrounded dS; warp w owns rows [Dk / 4 w, ...), 4 rows' loads in flight at a time.
  {
    constexpr int kWarpRows = kDk / Sh::kWarps, kPerLane = (kDv + kWarp - 1) / kWarp, kBatch = 4;
    static_assert(kWarpRows % kBatch == 0, "whole batches of rows");
    float m[kPerLane];
#pragma unroll
    for (int j = 0; j < kPerLane; ++j) {
      const int c = lane + j * kWarp;
      m[j] = centre != nullptr && c < kDv ? to_acc<float>(centre[c]) : 0.f;
    }
#pragma unroll 1
    for (int r0 = warp * kWarpRows; r0 < (warp + 1) * kWarpRows; r0 += kBatch) {
      float x[kBatch][kPerLane];
#pragma unroll
      for (int r = 0; r < kBatch; ++r) {
#pragma unroll
        for (int j = 0; j < kPerLane; ++j) {
          const int c = lane + j * kWarp;
          x[r][j] = centre != nullptr && c < kDv ? ds[(r0 + r) * kDv + c] : 0.f;
        }
      }
#pragma unroll
      for (int r = 0; r < kBatch; ++r) {
        float sum = 0.f;
#pragma unroll
        for (int j = 0; j < kPerLane; ++j) sum += x[r][j] * m[j];
        sum = warp_sum(sum);
        if (lane == 0) sm.dz_centred[r0 + r] = dz[r0 + r] + sum;
      }
    }
  }
  const float sigma = linear_tc::round_state_tile<T, state_tile_rows<kDk, kLayout>(), kDv, kThreads>(
      sm.state, kLdV, ds, nullptr, nullptr, sm.slots);
  key_chunk_grads<T, Map, kCausal, kDk, kDv>(p, sm, b, h, c0, keys, centre, ds, sigma, rho, sums);
}

// Copies columns [0, cols) of a rows x from_ld float32 matrix per head into a rows x to_ld one (the
// pointers already at the first column): a value group's slice of a state, in or out of the workspace.
// One block per head (16 K entries at Dk = 256: a copy far smaller than the launches around it).
struct StateColumns {
  const float* from;
  float* to;
  int64_t heads_total;
  int rows, cols, from_ld, to_ld;

  static constexpr int kThreads = linear_tc::Shape<32, 32>::kThreads;
  dim3 grid() const { return dim3(static_cast<unsigned>(heads_total)); }
};

// Static: no template, and only this header's launcher includes it (a second definition must not link).
// The caller's states are theirs to align: 4-byte accesses.
static __global__ void __launch_bounds__(StateColumns::kThreads) copy_state_columns_kernel(const StateColumns c) {
  const int64_t bh = blockIdx.x;
  for (int e = threadIdx.x; e < c.rows * c.cols; e += StateColumns::kThreads) {
    const int row = e / c.cols, col = e % c.cols;
    c.to[(bh * c.rows + row) * c.to_ld + col] = c.from[(bh * c.rows + row) * c.from_ld + col];
  }
}

// The initial normaliser's gradient: the sum of the value groups' shares, group after group.
static __global__ void __launch_bounds__(StateColumns::kThreads)
    sum_group_normalizers_kernel(const float* shares, int groups, int64_t elems, float* total) {
  const int64_t e = static_cast<int64_t>(blockIdx.x) * StateColumns::kThreads + threadIdx.x;
  if (e >= elems) return;
  float sum = 0.f;
  for (int g = 0; g < groups; ++g) sum += shares[g * elems + e];
  total[e] = sum;
}

// The value groups' workspace (floats): one group's Plan (reused group after group), then the dq and dk
// sums, the states' column slices (initial, saved, the final state's and the initial state's
// gradients) and each group's share of the initial normaliser's gradient.
struct ValueGroups {
  int64_t heads_total, q_len, k_len, qk_dim, columns, groups, group_plan_elems;

  explicit ValueGroups(const LinearParams& p)
      : heads_total(p.shape.batch * p.shape.heads), q_len(p.shape.q_len), k_len(p.shape.k_len),
        qk_dim(p.shape.qk_dim), columns(value_group_columns(p.shape.qk_dim, p.shape.v_dim)),
        groups(p.shape.v_dim / columns), group_plan_elems(Plan(with_columns(p, columns)).workspace_elems()) {}

  static LinearParams with_columns(LinearParams p, int64_t columns) {
    p.shape.v_dim = columns;
    return p;
  }
  int64_t slice_elems() const { return heads_total * qk_dim * columns; }
  int64_t normalizer_elems() const { return heads_total * qk_dim; }
  // Offsets in the workspace.
  int64_t dq_sums() const { return group_plan_elems; }
  int64_t dk_sums() const { return dq_sums() + heads_total * q_len * qk_dim; }
  int64_t slices() const { return dk_sums() + heads_total * k_len * qk_dim; }
  int64_t normalizer_shares() const { return slices() + 4 * slice_elems(); }
  int64_t workspace_elems() const { return normalizer_shares() + groups * normalizer_elems(); }

  // The parameters of group g's launches: views offset to its columns (elements of `element_bytes`), the
  // states' column slices in the workspace, its share of the initial normaliser's gradient.
  LinearParams group_params(const LinearParams& p, int64_t g, int64_t element_bytes, float* workspace) const {
    LinearParams group = with_columns(p, columns);
    for (RowView* view : {&group.v, &group.out, &group.grad_out, &group.grad_v}) {
      if (view->data != nullptr) view->data = static_cast<char*>(view->data) + g * columns * element_bytes;
    }
    float* slice = workspace + slices();
    if (p.initial_state != nullptr) group.initial_state = slice;
    if (p.saved_state != nullptr) group.saved_state = slice + slice_elems();
    if (p.grad_final_state != nullptr) group.grad_final_state = slice + 2 * slice_elems();
    group.grad_initial_state = slice + 3 * slice_elems();
    group.grad_final_normalizer = g == 0 ? p.grad_final_normalizer : nullptr;  // enters once
    group.grad_initial_normalizer = workspace + normalizer_shares() + g * normalizer_elems();
    return group;
  }
};

// The launches of one group of value columns (all of them below Dk = 256), in order. `launch(kernel,
// grid, shared_bytes, name, args...)` starts one with Shape's kThreads threads: a CUDA launch in
// linear_backward_tc.cu, an emulated one in tests/emulation. `compact`: the dq and dk, dv kernels' compact
// layouts (Tiles), where the head dims have them.
template <typename T, typename Map, bool kCausal, int kDk, int kDv, typename Launch>
void run_group(const LinearParams& p, float* workspace, Launch&& launch, bool compact, const GroupSums& sums) {
  namespace fwd = linear_forward_tc;
  static_assert(linear_tc::Shape<kDk, kDv>::kThreads == fwd::kThreads, "one block size for every launch");
  const Plan plan(p);
  if (Plan::needs_forward_states(p)) {
    const fwd::Plan forward(p);
    if (forward.key_chunks > 0) {
      launch(fwd::chunk_states_kernel<T, Map, kDk, kDv>, forward.states_grid(), fwd::states_shared_bytes<kDk, kDv>(),
             "linear_attention_backward (tensor cores, chunk states)", p, plan.forward_states(workspace));
    }
    launch(linear_tc::sweep_states_kernel, plan.forward_sweep(p, workspace).grid(), 0,
           "linear_attention_backward (tensor cores, state prefix)", plan.forward_sweep(p, workspace));
  }
  if (plan.query_chunks > 0) {
    launch(grad_states_kernel<T, Map, kDk, kDv>, plan.grad_states_grid(), grad_states_shared_bytes<kDk, kDv>(),
           "linear_attention_backward (tensor cores, chunk gradient states)", p, workspace);
  }
  launch(linear_tc::sweep_states_kernel, plan.grad_sweep(p, workspace).grid(), 0,
         "linear_attention_backward (tensor cores, gradient state suffix)", plan.grad_sweep(p, workspace));
  auto chunk_grads = [&](auto query_layout, auto key_layout) {
    constexpr TileLayout kQueryLayout = decltype(query_layout)::value, kKeyLayout = decltype(key_layout)::value;
    if (p.grad_q.data != nullptr && plan.query_chunks > 0) {
      launch(query_grads_kernel<T, Map, kCausal, kDk, kDv, kQueryLayout>, plan.query_grads_grid(),
             chunk_grads_shared_bytes<kDk, kDv, kQueryLayout>(), "linear_attention_backward (tensor cores, dq)", p,
             workspace, sums);
    }
    if (p.grad_k.data != nullptr && plan.key_chunks > 0) {
      launch(key_grads_kernel<T, Map, kCausal, kDk, kDv, kKeyLayout>, plan.key_grads_grid(),
             chunk_grads_shared_bytes<kDk, kDv, kKeyLayout>(), "linear_attention_backward (tensor cores, dk, dv)", p,
             workspace, sums);
    }
  };
  using Full = std::integral_constant<TileLayout, TileLayout::kFull>;
  if constexpr (has_compact_layouts<kDk, kDv>()) {
    if (compact) {
      return chunk_grads(std::integral_constant<TileLayout, TileLayout::kQueriesOverState>{},
                         std::integral_constant<TileLayout, compact_key_layout<kDk>()>{});
    }
  }
  chunk_grads(Full{}, Full{});
}

// Float32 elements of the workspace the backward needs.
inline int64_t workspace_elems(const LinearParams& p) {
  return value_group_columns(p.shape.qk_dim, p.shape.v_dim) == p.shape.v_dim ? Plan(p).workspace_elems()
                                                                              : ValueGroups(p).workspace_elems();
}

// The backward's launches: run_group's, once per value group at Dk = 256 (see the top of this file).
template <typename T, typename Map, bool kCausal, int kDk, int kDv, typename Launch>
void run(const LinearParams& p, float* workspace, Launch&& launch, bool compact) {
  if (p.shape.batch * p.shape.heads == 0) return;
  constexpr int kColumns = value_group_columns<kDk, kDv>();
  if constexpr (kColumns == kDv) {
    run_group<T, Map, kCausal, kDk, kDv>(p, workspace, launch, compact, GroupSums{});
  } else {
    const ValueGroups groups(p);
    float* slices = workspace + groups.slices();
    auto copy = [&](const float* from, float* to, int from_ld, int to_ld) {
      const StateColumns columns{from, to, groups.heads_total, kDk, kColumns, from_ld, to_ld};
      launch(copy_state_columns_kernel, columns.grid(), 0, "linear_attention_backward (tensor cores, state columns)",
             columns);
    };
    for (int64_t g = 0; g < groups.groups; ++g) {
      const int64_t first_column = g * kColumns;
      const void* inputs[] = {p.initial_state, p.saved_state, p.grad_final_state};  // slices 0, 1, 2
      for (int k = 0; k < 3; ++k) {
        if (inputs[k] == nullptr) continue;
        copy(static_cast<const float*>(inputs[k]) + first_column, slices + k * groups.slice_elems(), kDv, kColumns);
      }
      const GroupSums sums{workspace + groups.dq_sums(), workspace + groups.dk_sums(), g == 0, g == groups.groups - 1};
      run_group<T, Map, kCausal, kDk, kColumns>(groups.group_params(p, g, sizeof(T), workspace), workspace, launch,
                                                compact, sums);
      copy(slices + 3 * groups.slice_elems(), static_cast<float*>(p.grad_initial_state) + first_column, kColumns, kDv);
    }
    const int64_t elems = groups.normalizer_elems();
    launch(sum_group_normalizers_kernel, dim3(blocks_for(elems, StateColumns::kThreads)), 0,
           "linear_attention_backward (tensor cores, normaliser gradient)", workspace + groups.normalizer_shares(),
           static_cast<int>(groups.groups), elems, static_cast<float*>(p.grad_initial_normalizer));
  }
}

}  // namespace linear_backward_tc
}  // namespace cuda
}  // namespace actattn
