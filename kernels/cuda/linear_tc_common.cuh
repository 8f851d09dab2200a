// Shared pieces of the tensor-core linear attention kernels (linear_forward_tc.cuh,
// linear_backward_tc.cuh): tile loads with the feature map fused, the float32 state a block keeps in
// mma accumulator fragments, and the power-of-two scaling that keeps a float16 state in range.
//
// Shape is the backward's block (the forward's chunk-parallel kernels have their own, chunks of 64):
// head dim D (= Dk = Dv, 64 or 128), D / 16 warps, chunks of D positions. Warp w owns rows
// [16 w, 16 w + 16) of the D x D state and rows [16 w, 16 w + 16) of each chunk, so every product of a
// chunk step is a 16-row strip per warp and the state never leaves registers between chunks; it is
// rounded to the input type into shared memory only as a right-hand factor of a product.
#pragma once

#include "../key_lengths.h"
#include "mma.cuh"

#include <type_traits>

namespace actattn {
namespace cuda {
namespace linear_tc {

template <int kD>
struct Shape {
  static_assert(kD == 64 || kD == 128, "tiled head dims");
  static constexpr int kWarps = kD / 16;
  static constexpr int kThreads = kWarps * kWarp;
  static constexpr int kChunk = kD;     // positions per chunk: one 16-row strip per warp
  static constexpr int kLd = kD + 8;    // padded rows: ldmatrix's 8 row addresses fall in distinct banks
  static constexpr int kTiles = kD / 8;  // n-tiles across a D-wide row strip
  static constexpr int kSteps = kD / 16;
  static constexpr int kTileElems = kChunk * kLd;
};

template <typename T>
__device__ __forceinline__ float2 unpack(uint32_t pair) {
  const T* x = reinterpret_cast<const T*>(&pair);
  return make_float2(to_acc<float>(x[0]), to_acc<float>(x[1]));
}

// Rows [row0, row0 + kRows) of a (batch, head) slice into shared memory as scale * phi(x), rounded to T;
// rows from `valid` on are zero (after the map: elu+1 of a zero is one, and padding must weigh nothing).
// A thread's 16-byte loads are issued kInFlight at a time before the first of them is used, so that they
// are in flight together; more of them take more registers (the backward, whose state stays in
// registers meanwhile, spills at D = 128 with more than one).
template <typename T, typename Map, int kRows, int kCols, int kThreads, int kInFlight>
__device__ __forceinline__ void load_mapped_tile(T* shared, int ld, const RowView& view, int64_t b, int64_t h,
                                                 int64_t row0, int64_t valid, float scale) {
  constexpr int kChunks = kCols / 8, kLoads = kRows * kChunks / kThreads, kBatch = kInFlight;
  static_assert(kRows * kChunks % kThreads == 0 && kLoads % kBatch == 0, "every thread loads whole batches");
#pragma unroll 1
  for (int s0 = 0; s0 < kLoads; s0 += kBatch) {
    uint4 values[kBatch];
#pragma unroll
    for (int s = 0; s < kBatch; ++s) {
      const int idx = threadIdx.x + (s0 + s) * kThreads, r = idx / kChunks, c = (idx % kChunks) * 8;
      values[s] = row0 + r < valid ? *reinterpret_cast<const uint4*>(row_ptr<const T>(view, b, h, row0 + r) + c)
                                   : make_uint4(0, 0, 0, 0);
    }
#pragma unroll
    for (int s = 0; s < kBatch; ++s) {
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

// A (D x D, float32, contiguous) state of one (batch, head) into the calling warp's row strip; null: zero.
template <int kD>
__device__ __forceinline__ void load_state(mma::FragC (&strip)[kD / 8], const float* state, int warp, int lane) {
  mma::zero(strip);
  if (state == nullptr) return;
  const int g = lane / 4, t = lane % 4;
#pragma unroll
  for (int n = 0; n < kD / 8; ++n) {
#pragma unroll
    for (int r = 0; r < 4; ++r) strip[n].x[r] = state[(warp * 16 + g + 8 * (r >> 1)) * kD + n * 8 + 2 * t + (r & 1)];
  }
}

template <int kD>
__device__ __forceinline__ void store_state(const mma::FragC (&strip)[kD / 8], float* state, int warp, int lane) {
  const int g = lane / 4, t = lane % 4;
#pragma unroll
  for (int n = 0; n < kD / 8; ++n) {
#pragma unroll
    for (int half = 0; half < 2; ++half) {
      float* out = state + (warp * 16 + g + 8 * half) * kD + n * 8 + 2 * t;
      out[0] = strip[n].x[2 * half];
      out[1] = strip[n].x[2 * half + 1];
    }
  }
}

// The power of two sigma a float32 state is divided by before it is rounded to T: float16 (largest
// finite 65504) gets sigma with largest / sigma <= 2^14, so a state that grows with N neither overflows
// nor loses relative precision (the division is exact); bfloat16 has float32's range and gets 1.
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
    int exponent = 0;
    frexpf(largest, &exponent);  // largest < 2^exponent
    return exponent > 14 ? ldexpf(1.f, exponent - 14) : 1.f;
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

// The warp's strip of the state divided by state_divisor's sigma, rounded to T, into rows
// [16 warp, 16 warp + 16) of a shared D x D tile; returns sigma. Every thread of the block calls it.
template <typename T, int kD>
__device__ __forceinline__ float round_state_into(T* tile, int ld, const mma::FragC (&strip)[kD / 8], int warp,
                                                  int lane, float* slots) {
  const int g = lane / 4, t = lane % 4;
  float largest = 0.f;
#pragma unroll
  for (int n = 0; n < kD / 8; ++n) {
#pragma unroll
    for (int r = 0; r < 4; ++r) largest = fmaxf(largest, fabsf(strip[n].x[r]));
  }
  const float sigma = state_divisor<T, kD / 16>(largest, slots), inverse = 1.f / sigma;
#pragma unroll
  for (int n = 0; n < kD / 8; ++n) {
#pragma unroll
    for (int half = 0; half < 2; ++half) {
      *reinterpret_cast<uint32_t*>(tile + (warp * 16 + g + 8 * half) * ld + n * 8 + 2 * t) =
          mma::pack<T>(strip[n].x[2 * half] * inverse, strip[n].x[2 * half + 1] * inverse);
    }
  }
  return sigma;
}

// A length-D float32 vector (normaliser z or its gradient) into shared memory; null: zero.
template <int kD>
__device__ __forceinline__ void load_vector(float* shared, const float* vector) {
  for (int d = threadIdx.x; d < kD; d += blockDim.x) shared[d] = vector == nullptr ? 0.f : vector[d];
}

// vector[d] += sum_r weights[r] * tile[r][d] over a chunk (weights null: all one): z += phi(K)^T 1 and
// dz += A^T dden. Each thread owns whole entries, so no two threads write the same one.
template <typename T, int kD>
__device__ __forceinline__ void add_column_sums(float* vector, const T* tile, int ld, const float* weights) {
  for (int d = threadIdx.x; d < kD; d += blockDim.x) {
    float sum = 0.f;
    for (int r = 0; r < kD; ++r) sum += to_acc<float>(tile[r * ld + d]) * (weights == nullptr ? 1.f : weights[r]);
    vector[d] += sum;
  }
}

// The incoming gradient of a chunk's rows [q0, q0 + D) as the backward's two factors: into `tile`,
// dnum = dO / den rounded to T (dO when not normalising); into dden, -(dnum . O) (zero when not
// normalising), float32. Rows past the end are zero. One warp per row, two columns per lane and step.
template <typename T, int kD>
__device__ __forceinline__ void load_output_grads(T* tile, int ld, float* dden, const LinearParams& p, int64_t b,
                                                  int64_t h, int64_t q0) {
  const AttentionShape& s = p.shape;
  const int warp = threadIdx.x / kWarp, lane = threadIdx.x % kWarp;
  for (int r = warp; r < kD; r += blockDim.x / kWarp) {
    const int64_t i = q0 + r;
    const bool inside = i < s.q_len;
    const float inv_den =
        inside && p.normalize ? 1.f / static_cast<const float*>(p.denominator.data)[(b * s.heads + h) * s.q_len + i]
                              : 1.f;
    float dot = 0.f;
    for (int c = 2 * lane; c < kD; c += 2 * kWarp) {
      float2 g = make_float2(0.f, 0.f);
      if (inside) {
        const float2 dout = unpack<T>(*reinterpret_cast<const uint32_t*>(row_ptr<const T>(p.grad_out, b, h, i) + c));
        g = make_float2(dout.x * inv_den, dout.y * inv_den);
        if (p.normalize) {
          const float2 out = unpack<T>(*reinterpret_cast<const uint32_t*>(row_ptr<const T>(p.out, b, h, i) + c));
          dot += g.x * out.x + g.y * out.y;
        }
      }
      *reinterpret_cast<uint32_t*>(tile + r * ld + c) = mma::pack<T>(g.x, g.y);
    }
    dot = warp_sum(dot);
    if (lane == 0) dden[r] = -dot;
  }
}

}  // namespace linear_tc
}  // namespace cuda
}  // namespace actattn
