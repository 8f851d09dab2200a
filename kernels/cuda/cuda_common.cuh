// Device helpers shared by the CUDA kernels.
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <cstdint>
#include <map>
#include <mutex>
#include <stdexcept>
#include <string>
#include <utility>

#include "../params.h"

namespace actattn {
namespace cuda {

constexpr int kWarp = 32;

template <typename T>
__device__ __forceinline__ T* row_ptr(const RowView& view, int64_t b, int64_t h, int64_t n) {
  return static_cast<T*>(view.data) + b * view.batch_stride + view.stored_head(h) * view.head_stride +
         n * view.row_stride;
}

// Conversions through float for the half types, direct otherwise.
template <typename Acc, typename T>
__device__ __forceinline__ Acc to_acc(T x) {
  return static_cast<Acc>(x);
}
template <>
__device__ __forceinline__ float to_acc<float, __half>(__half x) {
  return __half2float(x);
}
template <>
__device__ __forceinline__ float to_acc<float, __nv_bfloat16>(__nv_bfloat16 x) {
  return __bfloat162float(x);
}

template <typename T, typename Acc>
__device__ __forceinline__ T from_acc(Acc x) {
  return static_cast<T>(x);
}
template <>
__device__ __forceinline__ __half from_acc<__half, float>(float x) {
  return __float2half_rn(x);
}
template <>
__device__ __forceinline__ __nv_bfloat16 from_acc<__nv_bfloat16, float>(float x) {
  return __float2bfloat16_rn(x);
}

template <typename Acc>
__device__ __forceinline__ Acc warp_sum(Acc x) {
  for (int offset = kWarp / 2; offset > 0; offset /= 2) x += __shfl_xor_sync(0xffffffffu, x, offset);
  return x;
}

template <typename Acc>
__device__ __forceinline__ Acc warp_max(Acc x) {
  for (int offset = kWarp / 2; offset > 0; offset /= 2) x = max(x, __shfl_xor_sync(0xffffffffu, x, offset));
  return x;
}

#if !defined(ACTATTN_WARP_EMULATION)
// 2^x by the hardware's ex2 (one instruction, relative error about 2^-22; -inf gives 0), for the
// tensor-core softmax, whose weights are rounded to 16 bits.
__device__ __forceinline__ float fast_exp2(float x) {
  float y;
  asm("ex2.approx.ftz.f32 %0, %1;" : "=f"(y) : "f"(x));
  return y;
}

// The block's dynamic shared memory (the launch's third parameter), 16-byte aligned.
template <typename T>
__device__ __forceinline__ T* dynamic_shared() {
  extern __shared__ uint4 actattn_dynamic_shared[];
  return reinterpret_cast<T*>(actattn_dynamic_shared);
}
#endif

// Throws with the kernel's name if the launch failed (bad configuration); never synchronises.
inline void check_launch(const char* kernel) {
  const cudaError_t error = cudaGetLastError();
  if (error != cudaSuccess) {
    throw std::runtime_error(std::string("actattn: launching ") + kernel + " failed: " + cudaGetErrorString(error));
  }
}

// Lets `kernel` take `bytes` of dynamic shared memory (past 48 KiB a kernel must opt in), or throws,
// naming it, when the GPU cannot give that much (the launch would otherwise fail with a bare
// "invalid argument"). Called before each launch. The attribute is a maximum that belongs to the kernel
// on the current device, so it is only ever raised: setting it to a smaller size would make the next
// launch of a larger shape fail (an H200 run hit that: float64 at D = 256 after D = 128). It is set
// once per kernel, device and larger size (cudaFuncSetAttribute is a driver call, which a decoding
// step's small launches would otherwise pay every time).
template <typename Kernel>
inline void allow_dynamic_shared(Kernel kernel, size_t bytes, const char* name) {
  constexpr size_t kWithoutOptIn = 48 * 1024;
  if (bytes <= kWithoutOptIn) return;
  int device = 0;
  if (cudaGetDevice(&device) != cudaSuccess) (void)cudaGetLastError();  // the launch will say why
  using Key = std::pair<const void*, int>;
  static std::mutex mutex;
  static std::map<Key, size_t> allowed;  // the largest size set so far
  const Key key{reinterpret_cast<const void*>(kernel), device};
  const std::lock_guard<std::mutex> lock(mutex);
  const auto found = allowed.find(key);
  if (found != allowed.end() && found->second >= bytes) return;
  const cudaError_t error =
      cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(bytes));
  if (error != cudaSuccess) {
    (void)cudaGetLastError();  // clear it, so that the next launch does not report it
    throw std::runtime_error(std::string("actattn: ") + name + " needs " + std::to_string(bytes) +
                             " bytes of shared memory per block, which this GPU does not allow: " +
                             cudaGetErrorString(error));
  }
  allowed[key] = bytes;
}

#if defined(__CUDACC__)
// The `launch` callable of a chunk-parallel schedule (linear_*_tc.cuh's run): each launch of kThreads
// threads on `stream`, its shared memory allowed first and its configuration checked after.
template <int kThreads>
inline auto launch_with(cudaStream_t stream) {
  return [stream](auto kernel, dim3 grid, int shared, const char* name, const auto&... args) {
    allow_dynamic_shared(kernel, shared, name);
    kernel<<<grid, kThreads, shared, stream>>>(args...);
    check_launch(name);
  };
}
#endif

inline unsigned blocks_for(int64_t items, int64_t per_block) {
  return static_cast<unsigned>((items + per_block - 1) / per_block);
}

}  // namespace cuda
}  // namespace actattn
