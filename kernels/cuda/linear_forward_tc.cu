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
  return std::max(linear_forward_tc::states_shared_bytes<kD>(), linear_forward_tc::outputs_shared_bytes<kD>());
}

}  // namespace

int linear_forward_tensor_core_shared_bytes(int64_t dim) {
  return dim == 64 ? forward_shared_bytes<64>() : forward_shared_bytes<128>();
}

int64_t linear_forward_tensor_core_workspace(const LinearParams& params) {
  return linear_forward_tc::Plan(params).workspace_elems();
}

void linear_forward_tensor_core(const LinearParams& params, cudaStream_t stream) {
  namespace fwd = linear_forward_tc;
  const fwd::Plan plan(params);
  if (plan.heads_total == 0) return;
  float* workspace = static_cast<float*>(params.workspace);
  dispatch_linear_tensor_core(params, [&](auto types, auto map, auto causal, auto dim) {
    using T = typename decltype(types)::scalar_t;
    using Map = decltype(map);
    constexpr int kD = decltype(dim)::value;
    if (plan.key_chunks > 0) {
      auto states = fwd::chunk_states_kernel<T, Map, kD, kD>;
      constexpr int shared = fwd::states_shared_bytes<kD>();
      allow_dynamic_shared(states, shared, "linear_attention_forward (tensor cores, chunk states)");
      states<<<plan.states_grid(), fwd::kThreads, shared, stream>>>(params, workspace);
      check_launch("linear_attention_forward (tensor cores, chunk states)");
    }
    fwd::prefix_states_kernel<<<plan.prefix_grid(), fwd::kThreads, 0, stream>>>(params, workspace);
    check_launch("linear_attention_forward (tensor cores, state prefix)");
    if (plan.query_chunks > 0) {
      auto outputs = fwd::chunk_outputs_kernel<T, Map, decltype(causal)::value, kD, kD>;
      constexpr int shared = fwd::outputs_shared_bytes<kD>();
      allow_dynamic_shared(outputs, shared, "linear_attention_forward (tensor cores, chunk outputs)");
      outputs<<<plan.outputs_grid(), fwd::kThreads, shared, stream>>>(params, workspace);
      check_launch("linear_attention_forward (tensor cores, chunk outputs)");
    }
  });
}

}  // namespace cuda
}  // namespace actattn
