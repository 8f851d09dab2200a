// Launches the generic linear attention backward (linear_backward.cuh): dden, then the feature- and the
// value-gradient kernels; float16 / bfloat16 calls the tensor-core kernels take go there instead.
#include "../dispatch.h"
#include "cuda_kernels.h"
#include "linear_backward.cuh"
#include "tensor_core_paths.h"

namespace actattn {

int64_t linear_attention_backward_workspace(const LinearParams& params) {
  if (cuda::linear_takes_tensor_cores(params, /*backward=*/true)) {
    return cuda::linear_backward_tensor_core_workspace(params);
  }
  return cuda::linear_backward::workspace_elems(params.shape);
}

void linear_attention_backward_cuda(const LinearParams& params, cudaStream_t stream) {
  using namespace cuda::linear_backward;
  const AttentionShape& s = params.shape;
  if (s.batch * s.heads == 0) return;
  if (cuda::linear_takes_tensor_cores(params, /*backward=*/true)) {
    return cuda::linear_backward_tensor_core(params, stream);
  }
  dispatch_dtype_cuda(params.dtype, [&](auto types) {
    using T = typename decltype(types)::scalar_t;
    using Acc = typename decltype(types)::acc_t;
    const int64_t q_rows = s.batch * s.heads * s.q_len;
    if (q_rows > 0) {
      row_terms_kernel<T, Acc><<<cuda::blocks_for(q_rows, 4), 4 * cuda::kWarp, 0, stream>>>(params);
      cuda::check_launch("linear_attention_backward (dden, 1 / den)");
    }
    const unsigned heads = static_cast<unsigned>(s.batch * s.heads);
    const bool wants_features = params.grad_q.data != nullptr || params.grad_k.data != nullptr;
    dispatch_feature_map(params.feature_map, [&](auto map) {
      using Map = decltype(map);
      dispatch_bool(params.causal, [&](auto causal) {
        constexpr bool kCausal = decltype(causal)::value;
        if (wants_features) {
          auto feature_kernel = feature_grads_kernel<T, Acc, Map, kCausal>;
          const int64_t shared = feature_grads_shared_bytes<Acc>(s.v_dim);
          cuda::allow_dynamic_shared(feature_kernel, shared, "linear_attention_backward (dq, dk)");
          const dim3 grid(heads, cuda::blocks_for(s.qk_dim, kFeatureRows));
          feature_kernel<<<grid, cuda::kLinearThreads, shared, stream>>>(params);
          cuda::check_launch("linear_attention_backward (dq, dk)");
        }
        auto value_kernel = value_grads_kernel<T, Acc, Map, kCausal>;
        const int64_t shared = value_grads_shared_bytes<Acc>(s.qk_dim);
        cuda::allow_dynamic_shared(value_kernel, shared, "linear_attention_backward (dv, initial state)");
        const dim3 grid(heads, static_cast<unsigned>(cuda::linear_column_blocks<Acc>(s.v_dim)));
        value_kernel<<<grid, cuda::kLinearThreads, shared, stream>>>(params);
        cuda::check_launch("linear_attention_backward (dv, initial state)");
      });
    });
  });
}

}  // namespace actattn
