// Launches the kernels of linear_backward_tc.cuh at one element type: dispatch of feature map, masking and
// head dims. Compiled once per element type, each in its own translation unit
// (linear_backward_tc_{bf16,fp16}.cu): 482 kernel instantiations in one file made the CUDA build's longest
// compilation, and the one CI's spill check compiles again when ptxas's choice flips under load
// (tools/check_cuda_build.sh), now half of it.
#pragma once

#include <cstdlib>
#include <cstring>

#include "../dispatch.h"
#include "linear_backward_tc.cuh"
#include "tensor_core_paths.h"

namespace actattn {
namespace cuda {

template <typename T>
void launch_linear_backward_tensor_core(const LinearParams& params, cudaStream_t stream) {
  dispatch_linear_tensor_core_of(TypePair<T, float>{}, params, [&](auto, auto map, auto causal, auto dims) {
    constexpr int kDk = dims.qk, kDv = dims.v;
    // ACTATTN_COMPACT_TILES=1: the compact layouts on any GPU, so that one with room for the full ones
    // can test them (tests/test_linear_attention.py).
    const char* forced = std::getenv("ACTATTN_COMPACT_TILES");
    const bool compact = (forced != nullptr && std::strcmp(forced, "1") == 0) ||
                         linear_backward_tc::chunk_grads_shared_bytes<kDk, kDv>() > device_shared_bytes_optin();
    linear_backward_tc::run<T, decltype(map), decltype(causal)::value, kDk, kDv>(
        params, static_cast<float*>(params.workspace), launch_with<linear_tc::Shape<kDk, kDv>::kThreads>(stream),
        compact);
  });
}

extern template void launch_linear_backward_tensor_core<__nv_bfloat16>(const LinearParams&, cudaStream_t);
extern template void launch_linear_backward_tensor_core<__half>(const LinearParams&, cudaStream_t);

}  // namespace cuda
}  // namespace actattn
