// Launches the kernel of linear_backward_tc.cuh: dispatch of dtype, feature map, masking and head dim.
#include "../dispatch.h"
#include "linear_backward_tc.cuh"
#include "tensor_core_paths.h"

namespace actattn {
namespace cuda {

int linear_backward_tensor_core_shared_bytes(int64_t dim) {
  return dim == 64 ? linear_backward_tc::shared_bytes<64>() : linear_backward_tc::shared_bytes<128>();
}

void linear_backward_tensor_core(const LinearParams& params, cudaStream_t stream) {
  const AttentionShape& s = params.shape;
  if (s.batch * s.heads == 0) return;
  dispatch_linear_tensor_core(params, [&](auto types, auto map, auto causal, auto dim) {
    constexpr int kD = decltype(dim)::value;
    auto kernel = linear_backward_tc::backward_kernel<typename decltype(types)::scalar_t, decltype(map),
                                                      decltype(causal)::value, kD>;
    constexpr int shared = linear_backward_tc::shared_bytes<kD>();
    allow_dynamic_shared(kernel, shared, "linear_attention_backward (tensor cores)");
    // blockIdx.y: the query block (dq) and the key block (dk, dv, initial state gradients).
    const dim3 grid(static_cast<unsigned>(s.batch * s.heads), 2);
    kernel<<<grid, linear_tc::Shape<kD>::kThreads, shared, stream>>>(params);
    check_launch("linear_attention_backward (tensor cores)");
  });
}

}  // namespace cuda
}  // namespace actattn
