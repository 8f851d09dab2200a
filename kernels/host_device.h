// Lets one functor serve the CPU and the CUDA kernels.
#pragma once

#if defined(__CUDACC__)
#define ACTATTN_HOST_DEVICE __host__ __device__ __forceinline__
#else
// Forced on the host too: these functors are called per element inside `omp simd` loops, which only
// vectorise when the call is inlined. GCC's own choice once left exp out of line in the bfloat16
// softmax backward only (one call per weight: that backward took 15-20 % longer than in float32).
#define ACTATTN_HOST_DEVICE inline __attribute__((always_inline))
#endif
