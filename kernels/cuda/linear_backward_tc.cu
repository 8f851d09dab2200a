// Launches the kernels of linear_backward_tc.cuh: dispatch of dtype, feature map, masking and head dim.
#include "../dispatch.h"
#include "linear_backward_tc.cuh"
#include "tensor_core_paths.h"

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
  return linear_backward_tc::workspace_elems(params);
}

void linear_backward_tensor_core(const LinearParams& params, cudaStream_t stream) {
  dispatch_linear_tensor_core(params, [&](auto types, auto map, auto causal, auto dims) {
    constexpr int kDk = dims.qk, kDv = dims.v;
    constexpr int kGroupDv = linear_backward_tc::value_group_columns<kDk, kDv>();
    const bool compact = compact_tiles_forced() ||
                         linear_backward_tc::chunk_grads_shared_bytes<kDk, kGroupDv>() > device_shared_bytes_optin();
    linear_backward_tc::run<typename decltype(types)::scalar_t, decltype(map), decltype(causal)::value, kDk, kDv>(
        params, static_cast<float*>(params.workspace), launch_with<linear_tc::Shape<kDk, kGroupDv>::kThreads>(stream),
        compact);
  });
}

}  // namespace cuda
}  // namespace actattn
