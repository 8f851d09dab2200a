// Shared pieces of the tensor-core linear attention kernels (linear_forward_tc.cuh,
// linear_backward_tc.cuh): the block shape, tile loads with the feature map fused, and the float32
// state a block keeps in mma accumulator fragments.
//
// Block shape: head dim D (= Dk = Dv, 64 or 128), D / 16 warps, chunks of D positions. Warp w owns rows
// [16 w, 16 w + 16) of the D x D state and rows [16 w, 16 w + 16) of each chunk, so every product of a
// chunk step is a 16-row strip per warp and the state never leaves registers between chunks; it is
// rounded to the input type into shared memory only as a right-hand factor of a product.
#pragma once

#include "../key_lengths.h"
#include "mma.cuh"

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
template <typename T, typename Map, int kRows, int kCols>
__device__ __forceinline__ void load_mapped_tile(T* shared, int ld, const RowView& view, int64_t b, int64_t h,
                                                 int64_t row0, int64_t valid, float scale) {
  constexpr int kChunks = kCols / 8;
  for (int idx = threadIdx.x; idx < kRows * kChunks; idx += blockDim.x) {
    const int r = idx / kChunks, c = (idx % kChunks) * 8;
    uint4 value = make_uint4(0, 0, 0, 0);
    if (row0 + r < valid) {
      value = *reinterpret_cast<const uint4*>(row_ptr<const T>(view, b, h, row0 + r) + c);
      uint32_t* pairs = reinterpret_cast<uint32_t*>(&value);
#pragma unroll
      for (int e = 0; e < 4; ++e) {
        const float2 x = unpack<T>(pairs[e]);
        pairs[e] = mma::pack<T>(scale * Map::value(x.x), scale * Map::value(x.y));
      }
    }
    *reinterpret_cast<uint4*>(shared + r * ld + c) = value;
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

// The warp's strip of the state, rounded to T, into rows [16 warp, 16 warp + 16) of a shared D x D tile.
template <typename T, int kD>
__device__ __forceinline__ void round_state_into(T* tile, int ld, const mma::FragC (&strip)[kD / 8], int warp,
                                                 int lane) {
  const int g = lane / 4, t = lane % 4;
#pragma unroll
  for (int n = 0; n < kD / 8; ++n) {
#pragma unroll
    for (int half = 0; half < 2; ++half) {
      *reinterpret_cast<uint32_t*>(tile + (warp * 16 + g + 8 * half) * ld + n * 8 + 2 * t) =
          mma::pack<T>(strip[n].x[2 * half], strip[n].x[2 * half + 1]);
    }
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
