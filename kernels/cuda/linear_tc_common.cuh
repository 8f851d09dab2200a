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
  constexpr int kChunks = kCols / 8, kLoads = kRows * kChunks / kThreads;
  static_assert(kRows * kChunks % kThreads == 0 && kLoads % kInFlight == 0, "every thread loads whole batches");
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

// The warp's strip of the state, centred (S - z m^T, where z and the centre m are given: see
// linear_backward_tc.cuh) and divided by state_divisor's sigma, rounded to T, into rows
// [16 warp, 16 warp + 16) of a shared D x D tile; returns sigma. Every thread of the block calls it.
template <typename T, int kD>
__device__ __forceinline__ float round_state_into(T* tile, int ld, const mma::FragC (&strip)[kD / 8], int warp,
                                                  int lane, float* slots, const float* z = nullptr,
                                                  const T* centre = nullptr) {
  const int g = lane / 4, t = lane % 4;
  // Entry r of n-tile n (row g + 8 (r / 2), column n * 8 + 2 t + r % 2 of the strip), centred.
  auto entry = [&](int n, int r) {
    const float x = strip[n].x[r];
    if (centre == nullptr) return x;
    return x - z[warp * 16 + g + 8 * (r >> 1)] * to_acc<float>(centre[n * 8 + 2 * t + (r & 1)]);
  };
  float largest = 0.f;  // unused (and compiled away) but for float16
#pragma unroll
  for (int n = 0; n < kD / 8; ++n) {
#pragma unroll
    for (int r = 0; r < 4; ++r) largest = fmaxf(largest, fabsf(entry(n, r)));
  }
  const float sigma = state_divisor<T, kD / 16>(largest, slots), inverse = 1.f / sigma;
#pragma unroll
  for (int n = 0; n < kD / 8; ++n) {
#pragma unroll
    for (int half = 0; half < 2; ++half) {
      *reinterpret_cast<uint32_t*>(tile + (warp * 16 + g + 8 * half) * ld + n * 8 + 2 * t) =
          mma::pack<T>(entry(n, 2 * half) * inverse, entry(n, 2 * half + 1) * inverse);
    }
  }
  return sigma;
}

// Rows [row0, row0 + kRows) of a (batch, head) slice minus the centre row (a D-vector in T; null: none),
// rounded to T, into shared memory (leading dimension ld), 16 bytes per thread and step; rows from
// `valid` on are zero, so padding never reaches a product (0 * NaN would poison it).
template <typename T, int kRows, int kCols>
__device__ __forceinline__ void load_centred_tile(T* shared, int ld, const RowView& view, int64_t b, int64_t h,
                                                  int64_t row0, int64_t valid, const T* centre) {
  constexpr int kChunks = kCols / 8;  // 8 elements of 2 bytes per 16-byte chunk
  for (int idx = threadIdx.x; idx < kRows * kChunks; idx += blockDim.x) {
    const int r = idx / kChunks, c = (idx % kChunks) * 8;
    uint4 value = make_uint4(0, 0, 0, 0);
    if (row0 + r < valid) {
      value = *reinterpret_cast<const uint4*>(row_ptr<const T>(view, b, h, row0 + r) + c);
      if (centre != nullptr) {
        const uint4 m = *reinterpret_cast<const uint4*>(centre + c);
        uint32_t* pairs = reinterpret_cast<uint32_t*>(&value);
        const uint32_t* centre_pairs = reinterpret_cast<const uint32_t*>(&m);
#pragma unroll
        for (int e = 0; e < 4; ++e) {
          const float2 x = unpack<T>(pairs[e]), mean = unpack<T>(centre_pairs[e]);
          pairs[e] = mma::pack<T>(x.x - mean.x, x.y - mean.y);
        }
      }
    }
    *reinterpret_cast<uint4*>(shared + r * ld + c) = value;
  }
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
// normalising), float32, taken from the rounded dnum so that dnum . v_j + dden, which the products
// form, cancels to dnum . (v_j - o) without the rounding's error; into shift, dnum . m for the centre
// row m (zero when null). Rows past the end are zero. One warp per row, two columns per lane and step.
template <typename T, int kD>
__device__ __forceinline__ void load_output_grads(T* tile, int ld, float* dden, float* shift, const LinearParams& p,
                                                  int64_t b, int64_t h, int64_t q0, const T* centre) {
  const AttentionShape& s = p.shape;
  const int warp = threadIdx.x / kWarp, lane = threadIdx.x % kWarp;
  for (int r = warp; r < kD; r += blockDim.x / kWarp) {
    const int64_t i = q0 + r;
    const bool inside = i < s.q_len;
    const float inv_den =
        inside && p.normalize ? 1.f / static_cast<const float*>(p.denominator.data)[(b * s.heads + h) * s.q_len + i]
                              : 1.f;
    float dot = 0.f, centre_dot = 0.f;
    for (int c = 2 * lane; c < kD; c += 2 * kWarp) {
      uint32_t g = 0u;
      if (inside) {
        const float2 dout = unpack<T>(*reinterpret_cast<const uint32_t*>(row_ptr<const T>(p.grad_out, b, h, i) + c));
        g = mma::pack<T>(dout.x * inv_den, dout.y * inv_den);
        const float2 rounded = unpack<T>(g);
        if (p.normalize) {
          const float2 out = unpack<T>(*reinterpret_cast<const uint32_t*>(row_ptr<const T>(p.out, b, h, i) + c));
          dot += rounded.x * out.x + rounded.y * out.y;
        }
        if (centre != nullptr) {
          const float2 m = unpack<T>(*reinterpret_cast<const uint32_t*>(centre + c));
          centre_dot += rounded.x * m.x + rounded.y * m.y;
        }
      }
      *reinterpret_cast<uint32_t*>(tile + r * ld + c) = g;
    }
    dot = warp_sum(dot);
    centre_dot = warp_sum(centre_dot);
    if (lane == 0) {
      dden[r] = -dot;
      shift[r] = centre_dot;
    }
  }
}

}  // namespace linear_tc
}  // namespace cuda
}  // namespace actattn
