// Launches the kernels of quadratic_forward_tc.cuh: dispatch of dtype, activation, masking and head dim.
#include "../dispatch.h"
#include "quadratic_forward_tc.cuh"
#include "tensor_core_paths.h"

namespace actattn {
namespace cuda {
namespace {

using namespace quadratic_forward_tc;

template <int kD, typename T, typename Activation, bool kBanded>
void launch(const QuadraticParams& params, Activation activation, cudaStream_t stream) {
  auto kernel = forward_kernel<T, Activation, kBanded, kD>;
  constexpr int shared = forward_shared_bytes<kD>();
  allow_dynamic_shared(kernel, shared, "quadratic_attention_forward (tensor cores)");
  const AttentionShape& s = params.shape;
  const dim3 grid(static_cast<unsigned>(s.batch * s.heads), blocks_for(s.q_len, kBlockRows));
  kernel<<<grid, kWarps * kWarp, shared, stream>>>(params, activation);
  check_launch("quadratic_attention_forward (tensor cores)");
}

}  // namespace

void quadratic_forward_tensor_core(const QuadraticParams& params, cudaStream_t stream) {
  dispatch_quadratic_tensor_core(params, [&](auto types, auto activation, auto banded, auto dim) {
    launch<decltype(dim)::value, typename decltype(types)::scalar_t, decltype(activation), decltype(banded)::value>(
        params, activation, stream);
  });
}

}  // namespace cuda
}  // namespace actattn
