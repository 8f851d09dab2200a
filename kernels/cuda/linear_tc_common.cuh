// Shared pieces of the tensor-core linear attention kernels (linear_forward_tc.cuh,
// linear_backward_tc.cuh): tile loads with the feature map fused, the power-of-two scaling that keeps a
// float16 state in range, and the sweep over per-chunk states that is the one sequential step of both
// chunk-parallel schedules.
#pragma once

#include "../key_lengths.h"
#include "mma.cuh"

#include <numeric>
#include <type_traits>

namespace actattn {
namespace cuda {
namespace linear_tc {

// A chunk block of the backward: head dims Dk (q, k) and Dv (v), each 32, 64, 96 or 128, or Dk = 256
// with Dv = 64 (the backward at D = 256 runs as four value groups of 64 columns: linear_backward_tc.cuh);
// chunks of 64 positions whatever they are, 4 warps; warp w owns rows [16 w, 16 w + 16) of the chunk,
// so every product is a 16-row strip per warp.
template <int kDk, int kDv>
struct Shape {
  static_assert(kDk % 32 == 0 && (kDk <= 128 || (kDk == 256 && kDv == 64)) && kDv % 32 == 0 && kDv <= 128,
                "tiled head dims: whole n-tile pairs; a 16-row strip's Dk accumulators fit the registers");
  static constexpr int kChunk = 64;
  static constexpr int kWarps = kChunk / 16;
  static constexpr int kThreads = kWarps * kWarp;
  // Padded rows: ldmatrix's 8 row addresses fall in distinct banks.
  static constexpr int kLdK = kDk + 8, kLdV = kDv + 8;
  static constexpr int kKeyTiles = kDk / 8, kValueTiles = kDv / 8;  // n-tiles across a row strip
  static constexpr int kKeySteps = kDk / 16, kValueSteps = kDv / 16;  // k-steps of a product over Dk, Dv
  static constexpr int kKeyTileElems = kChunk * kLdK;      // a chunk of Q or K
  static constexpr int kValueTileElems = kChunk * kLdV;    // a chunk of V or dO
  static constexpr int kStateElems = kDk * kLdV;           // a Dk x Dv state
  // The dq and the dk, dv kernels at D = 32 ask for 8 blocks per SM (at most 64 registers), and their
  // lanes load one row of dO and O at a time (load_output_grads), which brings what they need to about
  // 58 registers. Left to pick a count itself, ptxas chose 60-64 and, in some compilations of the same
  // source (cicc's PTX differs with the source's path and with ccache), 64 and an 8-byte spill, which
  // failed CI's spill gate; with the bound it plans its schedule within 64 (README, the CUDA check).
  static constexpr int kChunkGradsMinBlocks = kDk == 32 && kDv == 32 ? 8 : 1;
  static constexpr int kChunkGradsRowsInFlight = kDk == 32 && kDv == 32 ? 1 : 4;
};

template <typename T>
__device__ __forceinline__ float2 unpack(uint32_t pair) {
  const T* x = reinterpret_cast<const T*>(&pair);
  return make_float2(to_acc<float>(x[0]), to_acc<float>(x[1]));
}

// Rows [row0, row0 + kRows) of a (batch, head) slice into shared memory as scale * phi(x), rounded to T;
// rows from `valid` on are zero (after the map: elu+1 of a zero is one, and padding must weigh nothing).
// A thread's 16-byte loads are issued gcd(its load count, kMaxInFlight) at a time before the first of
// them is used, so that they are in flight together; more of
// them take more registers.
template <typename T, typename Map, int kRows, int kCols, int kThreads, int kMaxInFlight>
__device__ __forceinline__ void load_mapped_tile(T* shared, int ld, const RowView& view, int64_t b, int64_t h,
                                                 int64_t row0, int64_t valid, float scale) {
  constexpr int kChunks = kCols / 8, kLoads = kRows * kChunks / kThreads;
  static_assert(kRows * kChunks % kThreads == 0, "every thread loads whole 16-byte chunks");
  constexpr int kInFlight = std::gcd(kLoads, kMaxInFlight);
#pragma unroll 1  // unrolled, ptxas keeps the later batches' addresses live too (the backward spilled)
  for (int s0 = 0; s0 < kLoads; s0 += kInFlight) {
    uint4 values[kInFlight];
#pragma unroll
    for (int s = 0; s < kInFlight; ++s) {
      const int idx = threadIdx.x + (s0 + s) * kThreads, r = idx / kChunks, c = (idx % kChunks) * 8;
      values[s] = row0 + r < valid ? *reinterpret_cast<const uint4*>(row_ptr<const T>(view, b, h, row0 + r) + c)
                                   : make_uint4(0, 0, 0, 0);
    }
#pragma unroll
    for (int s = 0; s < kInFlight; ++s) {
      const int idx = threadIdx.x + (s0 + s) * kThreads, r = idx / kChunks, c = (idx % kChunks) * 8;
      if (row0 + r < valid) {
        uint32_t* pairs = reinterpret_cast<uint32_t*>(&values[s]);
#pragma unroll
        for (int e = 0; e < 4; ++e) {
          const float2 x = unpack<T>(pairs[e]);
          pairs[e] = mma::pack<T>(scale * Map::value(x.x), scale * Map::value(x.y));
        }
      }
      *reinterpret_cast<uint4*>(shared + r * ld + c) = values[s];
    }
  }
}

// The power of two sigma a float32 state is divided by before it is rounded to T: float16 (largest
// finite 65504, smallest normal 2^-14) gets sigma with 2^13 <= largest / sigma < 2^14, so a state that
// grows with N does not overflow and one that shrinks with N (a state's gradient, ~ 1 / N) does not
// sink into float16's subnormals (the division is exact); bfloat16 has float32's range and gets 1.
// `largest` is the calling thread's max |entry|; for float16 the block's maximum is taken through
// `slots` (one float per warp) and a barrier, which every thread must reach.
template <typename T, int kWarps>
__device__ __forceinline__ float state_divisor(float largest, float* slots) {
  if constexpr (!std::is_same_v<T, __half>) {
    return 1.f;
  } else {
    for (int offset = kWarp / 2; offset > 0; offset /= 2)
      largest = fmaxf(largest, __shfl_xor_sync(0xffffffffu, largest, offset));
    if (threadIdx.x % kWarp == 0) slots[threadIdx.x / kWarp] = largest;
    __syncthreads();
    for (int w = 0; w < kWarps; ++w) largest = fmaxf(largest, slots[w]);
    if (!(largest > 0.f)) return 1.f;
    int exponent = 0;
    frexpf(largest, &exponent);  // 2^(exponent - 1) <= largest < 2^exponent
    return ldexpf(1.f, exponent - 14);
  }
}

// acc *= sigma: a product with a divided state (state_divisor) brought back to the state's scale.
template <int N>
__device__ __forceinline__ void multiply(mma::FragC (&acc)[N], float sigma) {
  if (sigma == 1.f) return;
#pragma unroll
  for (int n = 0; n < N; ++n) {
#pragma unroll
    for (int r = 0; r < 4; ++r) acc[n].x[r] *= sigma;
  }
}

// A float32 kRows x kCols state (row-major at `state`), centred on m when `centre` is given (S - z m^T,
// z a float32 kRows-vector; see linear_backward_tc.cuh), divided by state_divisor's sigma and rounded
// to T into a shared tile (ld); returns sigma. Float16 reads the state twice (its largest entry first),
// bfloat16 once. Every thread of the block calls it; it ends with a barrier after which the tile may be
// read.
template <typename T, int kRows, int kCols, int kThreads>
__device__ __forceinline__ float round_state_tile(T* tile, int ld, const float* state, const float* z,
                                                  const T* centre, float* slots) {
  constexpr int kQuads = kRows * kCols / 4, kPerThread = kQuads / kThreads, kBatch = std::gcd(kPerThread, 4);
  static_assert(kQuads % kThreads == 0, "whole float4s per thread");
  // The thread's quads s0 .. s0 + kBatch - 1 (entries (row, col .. col + 3)), centred; all loads issued
  // before the first is used.
  auto load_batch = [&](int s0, float4(&x)[kBatch]) {
    float zr[kBatch] = {};
    uint2 m[kBatch] = {};
#pragma unroll
    for (int k = 0; k < kBatch; ++k) {
      const int idx = threadIdx.x + (s0 + k) * kThreads, row = idx / (kCols / 4), col = (idx % (kCols / 4)) * 4;
      x[k] = *reinterpret_cast<const float4*>(state + row * kCols + col);
      if (centre != nullptr) {
        zr[k] = z[row];
        m[k] = *reinterpret_cast<const uint2*>(centre + col);
      }
    }
    if (centre != nullptr) {
#pragma unroll
      for (int k = 0; k < kBatch; ++k) {
        const float2 lo = unpack<T>(m[k].x), hi = unpack<T>(m[k].y);
        x[k].x -= zr[k] * lo.x;
        x[k].y -= zr[k] * lo.y;
        x[k].z -= zr[k] * hi.x;
        x[k].w -= zr[k] * hi.y;
      }
    }
  };
  float largest = 0.f;
  if constexpr (std::is_same_v<T, __half>) {
#pragma unroll 1
    for (int s0 = 0; s0 < kPerThread; s0 += kBatch) {
      float4 x[kBatch];
      load_batch(s0, x);
#pragma unroll
      for (int k = 0; k < kBatch; ++k)
        largest = fmaxf(largest, fmaxf(fmaxf(fabsf(x[k].x), fabsf(x[k].y)), fmaxf(fabsf(x[k].z), fabsf(x[k].w))));
    }
  }
  const float sigma = state_divisor<T, kThreads / kWarp>(largest, slots), inverse = 1.f / sigma;
#pragma unroll 1
  for (int s0 = 0; s0 < kPerThread; s0 += kBatch) {
    float4 x[kBatch];
    load_batch(s0, x);
#pragma unroll
    for (int k = 0; k < kBatch; ++k) {
      const int idx = threadIdx.x + (s0 + k) * kThreads, row = idx / (kCols / 4), col = (idx % (kCols / 4)) * 4;
      *reinterpret_cast<uint2*>(tile + row * ld + col) = make_uint2(mma::pack<T>(x[k].x * inverse, x[k].y * inverse),
                                                                    mma::pack<T>(x[k].z * inverse, x[k].w * inverse));
    }
  }
  __syncthreads();
  return sigma;
}

// Rows [row0, row0 + kRows) of a (batch, head) slice minus the centre row (a D-vector in T; null: none),
// rounded to T, into shared memory (leading dimension ld); rows from `valid` on are zero, so padding
// never reaches a product (0 * NaN would poison it). A thread's 16-byte loads are issued
// gcd(its load count, kMaxInFlight) at a time before the first is used, as in load_mapped_tile.
template <typename T, int kRows, int kCols, int kThreads, int kMaxInFlight>
__device__ __forceinline__ void load_centred_tile(T* shared, int ld, const RowView& view, int64_t b, int64_t h,
                                                  int64_t row0, int64_t valid, const T* centre) {
  constexpr int kChunks = kCols / 8, kLoads = kRows * kChunks / kThreads;  // 16-byte chunks of 8 elements
  static_assert(kRows * kChunks % kThreads == 0, "every thread loads whole 16-byte chunks");
  constexpr int kInFlight = std::gcd(kLoads, kMaxInFlight);
#pragma unroll 1
  for (int s0 = 0; s0 < kLoads; s0 += kInFlight) {
    uint4 values[kInFlight];
#pragma unroll
    for (int s = 0; s < kInFlight; ++s) {
      const int idx = threadIdx.x + (s0 + s) * kThreads, r = idx / kChunks, c = (idx % kChunks) * 8;
      values[s] = row0 + r < valid ? *reinterpret_cast<const uint4*>(row_ptr<const T>(view, b, h, row0 + r) + c)
                                   : make_uint4(0, 0, 0, 0);
    }
#pragma unroll
    for (int s = 0; s < kInFlight; ++s) {
      const int idx = threadIdx.x + (s0 + s) * kThreads, r = idx / kChunks, c = (idx % kChunks) * 8;
      if (centre != nullptr && row0 + r < valid) {
        const uint4 m = *reinterpret_cast<const uint4*>(centre + c);
        uint32_t* pairs = reinterpret_cast<uint32_t*>(&values[s]);
        const uint32_t* centre_pairs = reinterpret_cast<const uint32_t*>(&m);
#pragma unroll
        for (int e = 0; e < 4; ++e) {
          const float2 x = unpack<T>(pairs[e]), mean = unpack<T>(centre_pairs[e]);
          pairs[e] = mma::pack<T>(x.x - mean.x, x.y - mean.y);
        }
      }
      *reinterpret_cast<uint4*>(shared + r * ld + c) = values[s];
    }
  }
}

// A length-D float32 vector (normaliser z or its gradient) into shared memory; null: zero.
template <int kD>
__device__ __forceinline__ void load_vector(float* shared, const float* vector) {
  for (int d = threadIdx.x; d < kD; d += blockDim.x) shared[d] = vector == nullptr ? 0.f : vector[d];
}

// vector[d] = factor * sum_r weights[r] * tile[r][d] over kRows rows (dz's share of a chunk, A^T dden),
// summed in float32. Each thread owns whole entries, so no two threads write the same one.
template <typename T, int kRows, int kD>
__device__ __forceinline__ void weighted_column_sums(float* vector, const T* tile, int ld, const float* weights,
                                                     float factor) {
  for (int d = threadIdx.x; d < kD; d += blockDim.x) {
    float sum = 0.f;
    for (int r = 0; r < kRows; ++r) sum += to_acc<float>(tile[r * ld + d]) * weights[r];
    vector[d] = factor * sum;
  }
}

// The power of two rho that a chunk's dnum = dO / den is multiplied by before it is rounded to T, and
// that the products made with it are divided by in float32: float16 gets rho = 2^floor(log2(max |den|))
// over the chunk's rows, so that rho / den is about 1 and dnum keeps dO's magnitude. Without it dnum
// falls with 1 / N into float16's subnormals (den ~ N: dnum ~ 1e-6 at N = 64 K, where the subnormals'
// spacing is 6e-8) and every gradient lost precision in proportion to N (1 % at N = 64 K on an H200).
// bfloat16 has float32's range and gets 1, as do unnormalised calls (dnum = dO). Every warp computes it
// alone from the saved den, so the blocks that read the same chunk agree without a barrier.
template <typename T, int kRows>
__device__ __forceinline__ float output_grad_factor(const LinearParams& p, int64_t b, int64_t h, int64_t q0) {
  if constexpr (!std::is_same_v<T, __half>) {
    return 1.f;
  } else {
    if (!p.normalize) return 1.f;
    const AttentionShape& s = p.shape;
    const float* den = static_cast<const float*>(p.denominator.data) + (b * s.heads + h) * s.q_len;
    float largest = 0.f;
    for (int r = threadIdx.x % kWarp; r < kRows; r += kWarp) {
      if (q0 + r < s.q_len) largest = fmaxf(largest, fabsf(den[q0 + r]));
    }
    for (int offset = kWarp / 2; offset > 0; offset /= 2)
      largest = fmaxf(largest, __shfl_xor_sync(0xffffffffu, largest, offset));
    if (!(largest > 0.f && largest <= 3.4e38f)) return 1.f;  // none (or inf, NaN): unscaled
    int exponent = 0;
    frexpf(largest, &exponent);  // 2^(exponent - 1) <= largest < 2^exponent
    return ldexpf(1.f, exponent - 1);
  }
}

// The incoming gradient of a chunk's rows [q0, q0 + kRows) as the backward's two factors, each times the
// chunk's rho (output_grad_factor, returned): into `tile`, dnum = dO / den rounded to T (dO when not
// normalising); into dden, -(dnum . O) (zero when not normalising), float32, taken from the rounded
// dnum so that dnum . v_j + dden, which the products form, cancels to dnum . (v_j - o) without the
// rounding's error; into shift, dnum . m for the centre row m (zero when null). Rows past the end are
// zero.
// Layout: warp w owns rows [kRows / warps * w, ...); a row's 16-byte chunks go to kRowLanes consecutive
// lanes (D / 8 rounded up to a power of two, so a row's dot products reduce by shuffles within its
// lanes; at D = 96, 4 of 16 lanes idle), 32 / kRowLanes rows per step. A lane's loads of dO, O and den
// are issued up to kMaxInFlight steps at a time before the first is used (one warp walking its rows one
// at a time waited a memory round trip per row: 16 per chunk); more in flight take more registers.
template <typename T, int kRows, int kD, int kThreads, int kMaxInFlight>
__device__ __forceinline__ float load_output_grads(T* tile, int ld, float* dden, float* shift, const LinearParams& p,
                                                   int64_t b, int64_t h, int64_t q0, const T* centre) {
  constexpr int kChunks = kD / 8, kWarps = kThreads / kWarp, kWarpRows = kRows / kWarps;
  constexpr int kRowLanes = kChunks <= 4 ? 4 : kChunks <= 8 ? 8 : kChunks <= 16 ? 16 : 32;
  constexpr int kStepRows = kWarp / kRowLanes, kSteps = kWarpRows / kStepRows;
  static_assert(kD % 8 == 0 && kChunks <= kWarp && kRows % kWarps == 0 && kWarpRows % kStepRows == 0,
                "whole 16-byte chunks, whole steps of rows");
  constexpr int kInFlight = std::gcd(kSteps, kMaxInFlight);
  const AttentionShape& s = p.shape;
  const int warp = threadIdx.x / kWarp, lane = threadIdx.x % kWarp;
  const int chunk = lane % kRowLanes, c = chunk * 8;  // the lane's columns, the same in every step
  const bool lane_has_columns = chunk < kChunks;
  const float* den_row = static_cast<const float*>(p.denominator.data) + (b * s.heads + h) * s.q_len;
  const float rho = output_grad_factor<T, kRows>(p, b, h, q0);
  uint4 m = make_uint4(0, 0, 0, 0);
  if (centre != nullptr && lane_has_columns) m = *reinterpret_cast<const uint4*>(centre + c);
  const uint32_t* centre_pairs = reinterpret_cast<const uint32_t*>(&m);

#pragma unroll 1
  for (int s0 = 0; s0 < kSteps; s0 += kInFlight) {
    uint4 dout[kInFlight], out[kInFlight];
    float den[kInFlight];
#pragma unroll
    for (int k = 0; k < kInFlight; ++k) {
      const int r = warp * kWarpRows + (s0 + k) * kStepRows + lane / kRowLanes;
      const int64_t i = q0 + r;
      const bool inside = i < s.q_len;
      dout[k] = inside && lane_has_columns ? *reinterpret_cast<const uint4*>(row_ptr<const T>(p.grad_out, b, h, i) + c)
                                           : make_uint4(0, 0, 0, 0);
      out[k] = inside && lane_has_columns && p.normalize
                   ? *reinterpret_cast<const uint4*>(row_ptr<const T>(p.out, b, h, i) + c)
                   : make_uint4(0, 0, 0, 0);
      den[k] = inside && p.normalize ? den_row[i] : 1.f;
    }
#pragma unroll
    for (int k = 0; k < kInFlight; ++k) {
      const int r = warp * kWarpRows + (s0 + k) * kStepRows + lane / kRowLanes;
      // Approximate division (2 ulp, den >= eps is far below 2^126): IEEE division's slow path is a
      // called subroutine, and ptxas spilled around that call in some builds of the D = 32 key kernel.
      const float scale = p.normalize ? __fdividef(rho, den[k]) : 1.f;
      uint32_t* pairs = reinterpret_cast<uint32_t*>(&dout[k]);
      const uint32_t* out_pairs = reinterpret_cast<const uint32_t*>(&out[k]);
      float dot = 0.f, centre_dot = 0.f;
#pragma unroll
      for (int e = 0; e < 4; ++e) {
        const float2 g = unpack<T>(pairs[e]);
        pairs[e] = mma::pack<T>(g.x * scale, g.y * scale);
        const float2 rounded = unpack<T>(pairs[e]), o = unpack<T>(out_pairs[e]), mean = unpack<T>(centre_pairs[e]);
        dot += rounded.x * o.x + rounded.y * o.y;
        centre_dot += rounded.x * mean.x + rounded.y * mean.y;
      }
      if (lane_has_columns) *reinterpret_cast<uint4*>(tile + r * ld + c) = dout[k];
#pragma unroll
      for (int offset = kRowLanes / 2; offset > 0; offset /= 2) {
        dot += __shfl_xor_sync(0xffffffffu, dot, offset);
        centre_dot += __shfl_xor_sync(0xffffffffu, centre_dot, offset);
      }
      if (chunk == 0) {
        dden[r] = -dot;
        shift[r] = centre_dot;
      }
    }
  }
  return rho;
}

// The sequential step of the chunk-parallel schedules: per (batch, head) and entry of the per-chunk
// states [S | z] (entry e of chunk c at workspace[(bh chunks + c) entries + e], entries = Dk Dv + Dk), a
// running sum over the chunks, in order or in reverse, starting from a given state (null: zero).
// Exclusive: each chunk's share is replaced by the sum before it (the state a chunk sees from outside
// it). The sum over all chunks goes to `total` (null: not kept). N / 64 additions per entry, no
// products: a pass over the states, bound by memory. One thread per 4 consecutive entries, 16-byte
// loads and stores of the workspace (entries is a multiple of 4: Dk is, at every tensor-core head
// dim), 8 chunks' loads in flight: on an H200 the one-float-per-thread sweep moved about 1.3 TB/s of
// the 4.8 and took 41 % of a causal linear fwd+bwd (three sweeps per call).
struct ChunkSweep {
  float* workspace;
  int64_t heads_total, chunks, state_entries, norm_entries;  // state_entries = Dk Dv, norm_entries = Dk
  const void* start_state;
  const void* start_norm;
  void* total_state;
  void* total_norm;
  bool reverse, exclusive;

  static constexpr int kThreads = 4 * kWarp;
  static constexpr int kVector = 4;  // entries per thread: one float4
  ACTATTN_HOST_DEVICE int64_t entries() const { return state_entries + norm_entries; }
  ACTATTN_HOST_DEVICE int64_t blocks_per_head() const {
    return (entries() / kVector + kThreads - 1) / kThreads;
  }
  dim3 grid() const { return dim3(static_cast<unsigned>(heads_total * blocks_per_head())); }
};

// Static: both launchers' translation units define it (it is no template), and the link must not see two.
static __global__ void __launch_bounds__(ChunkSweep::kThreads) sweep_states_kernel(const ChunkSweep sweep) {
  constexpr int kVector = ChunkSweep::kVector;
  // 32-bit: a 64-bit division is a called subroutine on the GPU.
  const unsigned blocks_per_head = static_cast<unsigned>(sweep.blocks_per_head());
  const int64_t bh = blockIdx.x / blocks_per_head;
  const int64_t e =
      (static_cast<int64_t>(blockIdx.x % blocks_per_head) * ChunkSweep::kThreads + threadIdx.x) * kVector;
  if (e >= sweep.entries()) return;
  // A group of 4 lies wholly in S or in z: Dk Dv is a multiple of 4 too.
  const bool is_norm = e >= sweep.state_entries;
  const float* start = static_cast<const float*>(is_norm ? sweep.start_norm : sweep.start_state);
  float* total = static_cast<float*>(is_norm ? sweep.total_norm : sweep.total_state);
  const int64_t at = is_norm ? bh * sweep.norm_entries + (e - sweep.state_entries) : bh * sweep.state_entries + e;

  // The given start and total states are the caller's tensors, whose alignment is theirs: 4-byte accesses.
  float4 running = make_float4(0.f, 0.f, 0.f, 0.f);
  if (start != nullptr) running = make_float4(start[at], start[at + 1], start[at + 2], start[at + 3]);
  const int64_t step = (sweep.reverse ? -sweep.entries() : sweep.entries()) / kVector;  // in float4s
  float4* entry = reinterpret_cast<float4*>(sweep.workspace + bh * sweep.chunks * sweep.entries() + e);
  if (sweep.reverse) entry -= (sweep.chunks - 1) * step;
  constexpr int kInFlight = 8;  // chunks read ahead, so that their loads overlap
  for (int64_t c0 = 0; c0 < sweep.chunks; c0 += kInFlight) {
    float4 share[kInFlight];
#pragma unroll
    for (int i = 0; i < kInFlight; ++i) {
      share[i] = c0 + i < sweep.chunks ? entry[(c0 + i) * step] : make_float4(0.f, 0.f, 0.f, 0.f);
    }
#pragma unroll
    for (int i = 0; i < kInFlight; ++i) {
      if (sweep.exclusive && c0 + i < sweep.chunks) entry[(c0 + i) * step] = running;
      running.x += share[i].x;
      running.y += share[i].y;
      running.z += share[i].z;
      running.w += share[i].w;
    }
  }
  if (total != nullptr) {
    total[at] = running.x;
    total[at + 1] = running.y;
    total[at + 2] = running.z;
    total[at + 3] = running.w;
  }
}

}  // namespace linear_tc
}  // namespace cuda
}  // namespace actattn
