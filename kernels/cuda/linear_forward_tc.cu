// Launches the kernels of linear_forward_tc.cuh: dispatch of dtype, feature map, masking and head dim.
#include <algorithm>

#include "../dispatch.h"
#include "linear_forward_tc.cuh"
#include "tensor_core_paths.h"

namespace actattn {
namespace cuda {

namespace {

template <int kD>
constexpr int forward_shared_bytes() {
  return std::max(linear_forward_tc::states_shared_bytes<kD, kD>(), linear_forward_tc::outputs_shared_bytes<kD, kD>());
}

}  // namespace

int linear_forward_tensor_core_shared_bytes(int64_t dim) {
  int bytes = 0;
  dispatch_head_dim(dim, [&](auto d) { bytes = forward_shared_bytes<decltype(d)::value>(); });
  return bytes;
}

int64_t linear_forward_tensor_core_workspace(const LinearParams& params) {
  return linear_forward_tc::Plan(params).workspace_elems();
}

void linear_forward_tensor_core(const LinearParams& params, cudaStream_t stream) {
  dispatch_linear_tensor_core(params, [&](auto types, auto map, auto causal, auto dim) {
    linear_forward_tc::run<typename decltype(types)::scalar_t, decltype(map), decltype(causal)::value,
                           decltype(dim)::value>(params, static_cast<float*>(params.workspace),
                                                 launch_with<linear_forward_tc::kThreads>(stream));
  });
}

}  // namespace cuda
}  // namespace actattn
