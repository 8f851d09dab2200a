// Linear attention forward on tensor cores (float16 / bfloat16, sm_80+; Dk = Dv in {32, 64, 96, 128, 256}
// or (Dk, Dv) = (64, 128), (128, 64): kernels/dispatch.h), the feature map fused: a = scale phi(q),
// b = phi(k), o_i = a_i S_i / (a_i . z_i + eps).
//
// Algorithm: chunk-parallel (flash-linear-attention's `chunk` schedule), chunks of kChunk = 64 positions
// whatever D, three launches (Plan gives their grids):
//  1. chunk_states_kernel, one block per (batch, head, key chunk, 64 value columns; 32 when 64 does not
//     divide Dv), all independent:
//     the chunk's contribution [dS | dz] = B^T [V | 1], one product on mma.sync whose extra column of
//     ones makes the normaliser's column sums.
//  2. linear_tc::sweep_states_kernel, one thread per entry of [S | z]: walks the chunks in order, adding,
//     and (causal) overwrites each contribution with the state before it: S_0 + the earlier chunks',
//     what the chunk's queries see from outside it. Writes the final state. The only sequential step:
//     N / 64 additions per entry, no products.
//  3. chunk_outputs_kernel, one block per (batch, head, query chunk, 64 or 32 value columns), independent:
//     [num | den] = A [S_c | z_c] + tril(A B^T) [V | 1], o = num / (den + eps): the state's part and the
//     intra-chunk part of both come from the same two products. The masked score blocks tril(A B^T) are
//     made 16 keys at a time in registers and fed straight into the product with [V | 1]; blocks above
//     the diagonal are skipped. Non-causal: S_c is the final state for every chunk, no intra-chunk term.
// Precision: products take 16-bit factors and accumulate in float32. z_c enters the product as two
// 16-bit columns, z_hi + z_lo (z_lo = z - z_hi rounded), so its own rounding does not add to den's error
// (which the emulation measures halved by it: 1.5e-3 -> 8e-4 at most in bfloat16). Float16 has no
// range for a state that grows with N (an entry past 65504 would be inf): its S_c is divided by a power
// of two sigma (exact) so that its largest entry is at most 2^14, and the state's part of the product
// multiplied back by sigma in float32 (linear_tc::state_divisor).
// Memory: workspace of B H ceil(Nk / 64) Dk (Dv + 1) floats (the per-chunk states; about N D per
// (batch, head) at D = 64, 2 N D at D = 128, 4 N D at D = 256); shared tiles of 40 KiB (D = 64), 67 KiB
// (D = 128) and 77 KiB (D = 256, where the causal block loads B and V into the state's memory once the
// product with the state is done: keys_over_state) per block, which every sm_80+ GPU grants. Saved for
// backward: the output and den (float32, when normalising);
// the final state is an output.
#pragma once

#include "linear_tc_common.cuh"

#include <algorithm>
#include <numeric>

namespace actattn {
namespace cuda {
namespace linear_forward_tc {

constexpr int kChunk = 64;                 // positions per chunk: one 16-row strip per warp
constexpr int kThreads = 4 * kWarp;

// Value columns per block: 64, or 32 when Dv is not a multiple of 64 (Dv = 32, 96).
ACTATTN_HOST_DEVICE constexpr int value_columns(int64_t v_dim) { return v_dim % 64 == 0 ? 64 : 32; }

// A block's value columns as a tile: kColumns values, then one n-tile pair of extended columns (the
// ones / normaliser columns), rows padded so that ldmatrix's 8 row addresses fall in distinct banks.
template <int kDv>
struct ValueBlock {
  static constexpr int kColumns = value_columns(kDv);
  static_assert(kDv % kColumns == 0, "whole column blocks");
  static constexpr int kExtended = kColumns + 16;
  static constexpr int kLdExtended = kExtended + 8;
  static constexpr int kExtendedTiles = kExtended / 8;
  static constexpr int kNormColumn = kColumns;  // n-tile kColumns / 8, element 0 (lanes with t == 0)
};

template <int kDk>
constexpr int key_ld() {
  return kDk + 8;
}

// Grids and workspace of one forward call.
struct Plan {
  int64_t heads_total, key_chunks, query_chunks, column_blocks, entries;

  ACTATTN_HOST_DEVICE explicit Plan(const LinearParams& p)
      : heads_total(p.shape.batch * p.shape.heads),
        key_chunks((p.shape.k_len + kChunk - 1) / kChunk),
        query_chunks((p.shape.q_len + kChunk - 1) / kChunk),
        column_blocks(p.shape.v_dim / value_columns(p.shape.v_dim)),
        entries(p.shape.qk_dim * p.shape.v_dim + p.shape.qk_dim) {}

  // Per (batch, head, key chunk): its contribution [dS | dz], then (causal) the state before it.
  int64_t workspace_elems() const { return heads_total * key_chunks * entries; }
  dim3 states_grid() const { return dim3(static_cast<unsigned>(heads_total * key_chunks), column_blocks); }
  // Launch 2 over the contributions in `workspace`, from the initial state, into the final state.
  linear_tc::ChunkSweep sweep(const LinearParams& p, float* workspace) const {
    return {workspace,       heads_total,          key_chunks,      p.shape.qk_dim * p.shape.v_dim,
            p.shape.qk_dim,  p.initial_state,      p.initial_normalizer, p.final_state,
            p.final_normalizer, /*reverse=*/false, /*exclusive=*/p.causal};
  }
  dim3 outputs_grid() const { return dim3(static_cast<unsigned>(heads_total * query_chunks), column_blocks); }
};

// What a block of the chunk kernels (forward and backward) owns: a (batch, head), one of its `chunks`
// chunks (rows from row0 on) and, when the grid's y splits the value columns, `columns` of them from
// col0 on (grids: Plan). 32-bit divisions: a 64-bit one is a called subroutine on the GPU, and ptxas
// spills around calls.
struct ChunkBlock {
  int64_t bh, b, h, chunk, row0;
  int col0;

  __device__ ChunkBlock(int64_t chunks, int64_t heads, int columns = 0)
      : bh(blockIdx.x / static_cast<unsigned>(chunks)),
        b(static_cast<unsigned>(bh) / static_cast<unsigned>(heads)),
        h(static_cast<unsigned>(bh) % static_cast<unsigned>(heads)),
        chunk(blockIdx.x % static_cast<unsigned>(chunks)),
        row0(chunk * kChunk),
        col0(static_cast<int>(blockIdx.y) * columns) {}
};

template <int kDk, int kDv>
constexpr int states_shared_bytes() {
  return (kChunk * key_ld<kDk>() + kChunk * ValueBlock<kDv>::kLdExtended) * 2;
}

// Whether the chunk outputs kernel (causal) loads B and V into the state tile's memory once the product
// with the state is done, instead of into their own while the state loads: at D = 256, where that takes
// its shared memory from 121 KiB to 77 (every sm_80+ GPU grants it; an H100 holds two blocks per SM, not
// one) at the price of B's and V's loads no longer overlapping the state's.
template <int kDk>
constexpr bool keys_over_state() {
  return kDk > 128;
}

// The chunk outputs kernel's tiles, in T elements: A, then the state and (after it, or over it) B and V.
template <int kDk, int kDv>
struct OutputTiles {
  static constexpr int kQueries = kChunk * key_ld<kDk>();
  static constexpr int kKeysAndValues = kChunk * key_ld<kDk>() + kChunk * ValueBlock<kDv>::kLdExtended;
  static constexpr int kState = kDk * ValueBlock<kDv>::kLdExtended;
  static constexpr int kElems = kQueries + (keys_over_state<kDk>() ? std::max(kKeysAndValues, kState)
                                                                   : kKeysAndValues + kState);
};

template <int kDk, int kDv>
constexpr int outputs_shared_bytes() {
  return OutputTiles<kDk, kDv>::kElems * 2 + (kThreads / kWarp) * static_cast<int>(sizeof(float));
}
static_assert(outputs_shared_bytes<256, 256>() <= 99 * 1024, "D = 256 fits the GPUs granting least (sm_86/89)");

// Value columns [col0, col0 + kColumns) of rows [row0, row0 + kChunk) into `tile` (kLdExtended), started with
// cp.async (rows from `valid` on zero), and the extended columns written: a one in kNormColumn, zeros
// after it. Lands at cp_async_wait_all() + __syncthreads().
template <typename T, int kDv>
__device__ __forceinline__ void load_values_with_ones(T* tile, const RowView& v, int64_t b, int64_t h, int64_t row0,
                                                      int64_t valid, int col0) {
  using VB = ValueBlock<kDv>;
  constexpr int kColumns = VB::kColumns, kLdExtended = VB::kLdExtended;
  RowView columns = v;
  columns.data = static_cast<T*>(v.data) + col0;
  mma::load_tile_async<T, kChunk, kColumns, kThreads>(tile, kLdExtended, columns, b, h, row0, valid);
  static_assert(kThreads == 2 * kChunk, "one thread per row and 8 extended columns");
  const int r = threadIdx.x / 2, half = threadIdx.x % 2;
  uint4 ones = make_uint4(0, 0, 0, 0);
  if (half == 0) ones.x = mma::pack<T>(1.f, 0.f);
  *reinterpret_cast<uint4*>(tile + r * kLdExtended + kColumns + 8 * half) = ones;
}

// The float32 state [S | z] a chunk's queries see, columns [col0, col0 + kColumns) of S (row length kDv) and
// z as two columns z_hi, z_lo, rounded to T into `tile` (kDk rows, kLdExtended). Float16 divides it by
// the returned power of two first (see the header); `slots` holds one float per warp. A thread's float4
// loads are issued up to 16 at a time: all of them at D <= 128, held in registers between the largest
// entry and the rounding; at D = 256 (32 per thread) in two batches, which float16 reads twice (its
// largest entry first) rather than hold 128 floats. Ends with a barrier after which the tile may be read.
template <typename T, int kDk, int kDv>
__device__ __forceinline__ float load_state_tile(T* tile, const float* state, const float* norm, int col0,
                                                 float* slots) {
  using VB = ValueBlock<kDv>;
  constexpr int kColumns = VB::kColumns, kExtended = VB::kExtended, kLdExtended = VB::kLdExtended;
  static_assert(kDk * kColumns % (4 * kThreads) == 0, "whole float4s per thread");
  constexpr int kQuads = kDk * kColumns / 4 / kThreads;  // float4 loads per thread
  constexpr int kBatch = kQuads <= 16 ? kQuads : std::gcd(kQuads, 16);
  constexpr bool kResident = kBatch == kQuads;  // one batch: loaded once, whatever T
  float4 values[kBatch];
  auto load_batch = [&](int s0) {
#pragma unroll
    for (int s = 0; s < kBatch; ++s) {
      const int idx = threadIdx.x + (s0 + s) * kThreads, row = idx / (kColumns / 4), col = (idx % (kColumns / 4)) * 4;
      values[s] = *reinterpret_cast<const float4*>(state + row * kDv + col0 + col);
    }
  };
  if constexpr (kResident) load_batch(0);
  constexpr int kNorms = (kDk + kThreads - 1) / kThreads;  // z entries per thread: d = threadIdx.x + j kThreads
  float z[kNorms];
#pragma unroll
  for (int j = 0; j < kNorms; ++j) {
    const int d = threadIdx.x + j * kThreads;
    z[j] = d < kDk ? norm[d] : 0.f;
  }

  float largest = 0.f;  // unused (and compiled away) but for float16
  if constexpr (std::is_same_v<T, __half>) {
#pragma unroll
    for (int j = 0; j < kNorms; ++j) largest = fmaxf(largest, fabsf(z[j]));
#pragma unroll 1
    for (int s0 = 0; s0 < kQuads; s0 += kBatch) {
      if constexpr (!kResident) load_batch(s0);
#pragma unroll
      for (int s = 0; s < kBatch; ++s) {
        largest = fmaxf(largest, fmaxf(fmaxf(fabsf(values[s].x), fabsf(values[s].y)),
                                       fmaxf(fabsf(values[s].z), fabsf(values[s].w))));
      }
    }
  }
  const float sigma = linear_tc::state_divisor<T, kThreads / kWarp>(largest, slots);
  const float inverse = 1.f / sigma;

#pragma unroll 1
  for (int s0 = 0; s0 < kQuads; s0 += kBatch) {
    if constexpr (!kResident) load_batch(s0);
#pragma unroll
    for (int s = 0; s < kBatch; ++s) {
      const int idx = threadIdx.x + (s0 + s) * kThreads, row = idx / (kColumns / 4), col = (idx % (kColumns / 4)) * 4;
      const float4 x = values[s];
      *reinterpret_cast<uint2*>(tile + row * kLdExtended + col) =
          make_uint2(mma::pack<T>(x.x * inverse, x.y * inverse), mma::pack<T>(x.z * inverse, x.w * inverse));
    }
  }
#pragma unroll
  for (int j = 0; j < kNorms; ++j) {
    const int d = threadIdx.x + j * kThreads;
    if (d >= kDk) break;
    const float zj = z[j] * inverse;
    const float z_hi = linear_tc::unpack<T>(mma::pack<T>(zj, 0.f)).x;
    uint32_t* extended = reinterpret_cast<uint32_t*>(tile + d * kLdExtended + VB::kNormColumn);
    extended[0] = mma::pack<T>(z_hi, zj - z_hi);
#pragma unroll
    for (int c = 1; c < (kExtended - kColumns) / 2; ++c) extended[c] = 0u;
  }
  __syncthreads();
  return sigma;
}

// Launch 1: [dS | dz] = B^T [V | 1] of one key chunk, columns [kColumns blockIdx.y, +kColumns) of dS (dz from the
// first column block only), into the workspace.
template <typename T, typename Map, int kDk, int kDv>
__global__ void __launch_bounds__(kThreads) chunk_states_kernel(const LinearParams p, float* workspace) {
  using VB = ValueBlock<kDv>;
  constexpr int kColumns = VB::kColumns, kLdExtended = VB::kLdExtended, kExtendedTiles = VB::kExtendedTiles;
  static_assert(kDk % 16 == 0, "whole 16-row strips of the state");
  constexpr int kLdK = key_ld<kDk>();
  T* b_tile = dynamic_shared<T>();
  T* v_tile = b_tile + kChunk * kLdK;

  const Plan plan(p);
  const ChunkBlock blk(plan.key_chunks, p.shape.heads, kColumns);
  const int warp = threadIdx.x / kWarp, lane = threadIdx.x % kWarp, g = lane / 4, t = lane % 4;
  const int64_t keys = keys_of(p.key_lengths, blk.b, p.shape.k_len);

  load_values_with_ones<T, kDv>(v_tile, p.v, blk.b, blk.h, blk.row0, keys, blk.col0);
  linear_tc::load_mapped_tile<T, Map, kChunk, kDk, kThreads, 4>(b_tile, kLdK, p.k, blk.b, blk.h, blk.row0, keys,
                                                                1.f);
  mma::cp_async_wait_all();
  __syncthreads();

  float* delta_state = workspace + (blk.bh * plan.key_chunks + blk.chunk) * plan.entries;
  float* delta_norm = delta_state + kDk * kDv;
#pragma unroll
  for (int strip = warp; strip < kDk / 16; strip += kThreads / kWarp) {  // 16 rows of [dS | dz] each
    mma::FragC acc[kExtendedTiles];
    mma::zero(acc);
    mma::mma_shared_a_b<T, kChunk / 16, kExtendedTiles, true>(acc, b_tile + strip * 16, kLdK, v_tile, kLdExtended,
                                                               lane);
#pragma unroll
    for (int half = 0; half < 2; ++half) {
      const int row = strip * 16 + g + 8 * half;
#pragma unroll
      for (int n = 0; n < kColumns / 8; ++n) {
        *reinterpret_cast<float2*>(delta_state + row * kDv + blk.col0 + n * 8 + 2 * t) =
            make_float2(acc[n].x[2 * half], acc[n].x[2 * half + 1]);
      }
      if (blockIdx.y == 0 && t == 0) delta_norm[row] = acc[VB::kNormColumn / 8].x[2 * half];
    }
  }
}

// Launch 3: the output of one query chunk, columns [kColumns blockIdx.y, +kColumns), and its den (first
// column block).
template <typename T, typename Map, bool kCausal, int kDk, int kDv>
__global__ void __launch_bounds__(kThreads) chunk_outputs_kernel(const LinearParams p, const float* workspace) {
  using VB = ValueBlock<kDv>;
  constexpr int kColumns = VB::kColumns, kLdExtended = VB::kLdExtended, kExtendedTiles = VB::kExtendedTiles,
                kNormColumn = VB::kNormColumn;
  static_assert(kDk % 16 == 0, "whole k-steps");
  constexpr int kLdK = key_ld<kDk>();
  constexpr bool kKeysOverState = keys_over_state<kDk>();
  using Tiles = OutputTiles<kDk, kDv>;
  T* a_tile = dynamic_shared<T>();
  T* s_tile = a_tile + Tiles::kQueries;
  T* b_tile = kKeysOverState ? s_tile : s_tile + Tiles::kState;
  T* v_tile = b_tile + kChunk * kLdK;
  float* slots = reinterpret_cast<float*>(a_tile + Tiles::kElems);

  const AttentionShape s = p.shape;
  const Plan plan(p);
  const ChunkBlock blk(plan.query_chunks, s.heads, kColumns);
  const int64_t bh = blk.bh, b = blk.b, h = blk.h, q0 = blk.row0;
  const int col0 = blk.col0;
  const int warp = threadIdx.x / kWarp, lane = threadIdx.x % kWarp, g = lane / 4, t = lane % 4;
  const int64_t keys = keys_of(p.key_lengths, b, s.k_len);

  auto load_values = [&] { load_values_with_ones<T, kDv>(v_tile, p.v, b, h, q0, keys, col0); };
  auto load_keys = [&] {  // and waits for V's copies: both land at the next barrier
    linear_tc::load_mapped_tile<T, Map, kChunk, kDk, kThreads, 4>(b_tile, kLdK, p.k, b, h, q0, keys, 1.f);
    mma::cp_async_wait_all();
  };
  if constexpr (kCausal && !kKeysOverState) load_values();  // its copies in flight while A and B load
  linear_tc::load_mapped_tile<T, Map, kChunk, kDk, kThreads, 4>(a_tile, kLdK, p.q, b, h, q0, s.q_len,
                                                             static_cast<float>(p.scale));
  if constexpr (kCausal && !kKeysOverState) load_keys();
  // Causal: the state before this chunk (prefix_states_kernel); non-causal: the final state.
  const float* state = kCausal ? workspace + (bh * plan.key_chunks + blk.chunk) * plan.entries
                               : static_cast<const float*>(p.final_state) + bh * kDk * kDv;
  const float* norm = kCausal ? state + kDk * kDv : static_cast<const float*>(p.final_normalizer) + bh * kDk;
  const float sigma = load_state_tile<T, kDk, kDv>(s_tile, state, norm, col0, slots);

  const T* a_rows = a_tile + warp * 16 * kLdK;
  mma::FragC acc[kExtendedTiles];  // [num | den] of this warp's 16 rows
  mma::zero(acc);
  mma::mma_shared_a_b<T, kDk / 16, kExtendedTiles>(acc, a_rows, kLdK, s_tile, kLdExtended, lane);
  linear_tc::multiply(acc, sigma);
  if constexpr (kCausal) {
    if constexpr (kKeysOverState) {
      __syncthreads();  // every warp is done with the state, whose memory B and V take
      load_values();
      load_keys();
      __syncthreads();
    }
#pragma unroll 1  // unrolled in part, it spilled at D = 32 (56 registers)
    for (int kb = 0; kb <= warp; ++kb) {  // 16-key blocks at or left of the diagonal
      mma::FragC w[2];
      mma::zero(w);
      mma::mma_shared_a_bt<T, kDk / 16>(w, a_rows, kLdK, b_tile + kb * 16 * kLdK, kLdK, lane);
      if (kb == warp) {
#pragma unroll
        for (int n = 0; n < 2; ++n) {
#pragma unroll
          for (int r = 0; r < 4; ++r) {
            if (n * 8 + 2 * t + (r & 1) > g + 8 * (r >> 1)) w[n].x[r] = 0.f;
          }
        }
      }
      mma::mma_p_b<T, 1>(acc, w, v_tile + kb * 16 * kLdExtended, kLdExtended, lane);
    }
  }

  const float eps = static_cast<float>(p.eps);
#pragma unroll
  for (int half = 0; half < 2; ++half) {
    // den's two columns (z_hi's and z_lo's) sit in the lane with t == 0; the row's other lanes get it.
    float den = t == 0 ? acc[kNormColumn / 8].x[2 * half] + acc[kNormColumn / 8].x[2 * half + 1] : 0.f;
    den += __shfl_xor_sync(0xffffffffu, den, 1);
    den += __shfl_xor_sync(0xffffffffu, den, 2);
    den += eps;
    const int64_t i = q0 + warp * 16 + g + 8 * half;
    if (i >= s.q_len) continue;
    if (p.normalize && blockIdx.y == 0 && t == 0) static_cast<float*>(p.denominator.data)[bh * s.q_len + i] = den;
    const float out_scale = p.normalize ? 1.f / den : 1.f;
    T* out_row = row_ptr<T>(p.out, b, h, i) + col0;
#pragma unroll
    for (int n = 0; n < kColumns / 8; ++n) {
      *reinterpret_cast<uint32_t*>(out_row + n * 8 + 2 * t) =
          mma::pack<T>(acc[n].x[2 * half] * out_scale, acc[n].x[2 * half + 1] * out_scale);
    }
  }
}

// The forward's launches in order. `launch(kernel, grid, shared_bytes, name, args...)` starts one with
// kThreads threads: a CUDA launch in linear_forward_tc.cu, an emulated one in tests/emulation.
template <typename T, typename Map, bool kCausal, int kDk, int kDv, typename Launch>
void run(const LinearParams& p, float* workspace, Launch&& launch) {
  const Plan plan(p);
  if (plan.heads_total == 0) return;
  if (plan.key_chunks > 0) {
    launch(chunk_states_kernel<T, Map, kDk, kDv>, plan.states_grid(), states_shared_bytes<kDk, kDv>(),
           "linear_attention_forward (tensor cores, chunk states)", p, workspace);
  }
  launch(linear_tc::sweep_states_kernel, plan.sweep(p, workspace).grid(), 0,
         "linear_attention_forward (tensor cores, state prefix)", plan.sweep(p, workspace));
  if (plan.query_chunks > 0) {
    launch(chunk_outputs_kernel<T, Map, kCausal, kDk, kDv>, plan.outputs_grid(), outputs_shared_bytes<kDk, kDv>(),
           "linear_attention_forward (tensor cores, chunk outputs)", p, static_cast<const float*>(workspace));
  }
}

}  // namespace linear_forward_tc
}  // namespace cuda
}  // namespace actattn
