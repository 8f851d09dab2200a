// Lets one functor serve the CPU and the CUDA kernels.
#pragma once

#if defined(__CUDACC__)
#define ACTATTN_HOST_DEVICE __host__ __device__ __forceinline__
#else
#define ACTATTN_HOST_DEVICE inline
#endif
