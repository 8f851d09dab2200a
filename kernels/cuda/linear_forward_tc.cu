// Launches the kernels of linear_forward_tc.cuh: dispatch of dtype, feature map, masking and head dim.
#include <algorithm>

#include "../dispatch.h"
#include "linear_forward_tc.cuh"
#include "tensor_core_paths.h"

namespace actattn {
namespace cuda {

namespace {

template <int kDk, int kDv>
constexpr int forward_shared_bytes() {
  return std::max(linear_forward_tc::states_shared_bytes<kDk, kDv>(),
                  linear_forward_tc::outputs_shared_bytes<kDk, kDv>());
}

}  // namespace

int linear_forward_tensor_core_shared_bytes(int64_t qk_dim, int64_t v_dim) {
  int bytes = 0;
  dispatch_linear_head_dims(qk_dim, v_dim, [&](auto dims) { bytes = forward_shared_bytes<dims.qk, dims.v>(); });
  return bytes;
}

int64_t linear_forward_tensor_core_workspace(const LinearParams& params) {
  return linear_forward_tc::Plan(params).workspace_elems();
}

void linear_forward_tensor_core(const LinearParams& params, cudaStream_t stream) {
  dispatch_linear_tensor_core(params, [&](auto types, auto map, auto causal, auto dims) {
    linear_forward_tc::run<typename decltype(types)::scalar_t, decltype(map), decltype(causal)::value, dims.qk,
                           dims.v>(params, static_cast<float*>(params.workspace),
                                   launch_with<linear_forward_tc::kThreads>(stream));
  });
}

}  // namespace cuda
}  // namespace actattn
