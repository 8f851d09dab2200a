// The tensor-core linear backward's entry points; its kernels are compiled per element type in
// linear_backward_tc_{bf16,fp16}.cu (linear_backward_tc_launch.cuh).
#include "linear_backward_tc_launch.cuh"

namespace actattn {
namespace cuda {

int linear_backward_tensor_core_shared_bytes(int64_t qk_dim, int64_t v_dim) {
  int bytes = 0;
  dispatch_linear_head_dims(qk_dim, v_dim, [&](auto dims) {
    bytes = linear_backward_tc::least_chunk_grads_shared_bytes<dims.qk, dims.v>();
  });
  return bytes;
}

int64_t linear_backward_tensor_core_workspace(const LinearParams& params) {
  return linear_backward_tc::Plan(params).workspace_elems();
}

void linear_backward_tensor_core(const LinearParams& params, cudaStream_t stream) {
  dispatch_half_dtype(params.dtype, [&](auto types) {
    launch_linear_backward_tensor_core<typename decltype(types)::scalar_t>(params, stream);
  });
}

}  // namespace cuda
}  // namespace actattn
