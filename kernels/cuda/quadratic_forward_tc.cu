// Launches the kernels of quadratic_forward_tc.cuh: dispatch of dtype, activation, masking and head dims.
#include "../dispatch.h"
#include "quadratic_forward_tc.cuh"
#include "tensor_core_paths.h"

namespace actattn {
namespace cuda {
namespace {

using namespace quadratic_forward_tc;

template <int kDk, int kDv, typename T, typename Activation, bool kBanded>
void launch(const QuadraticParams& params, Activation activation, cudaStream_t stream) {
  auto kernel = forward_kernel<T, Activation, kBanded, kDk, kDv>;
  constexpr int shared = forward_shared_bytes<kDk, kDv>();
  allow_dynamic_shared(kernel, shared, "quadratic_attention_forward (tensor cores)");
  const AttentionShape& s = params.shape;
  const dim3 grid(static_cast<unsigned>(s.batch * s.heads), blocks_for(s.q_len, kBlockRows));
  kernel<<<grid, kWarps * kWarp, shared, stream>>>(params, activation);
  check_launch("quadratic_attention_forward (tensor cores)");
}

}  // namespace

void quadratic_forward_tensor_core(const QuadraticParams& params, cudaStream_t stream) {
  dispatch_quadratic_tensor_core(params, [&](auto types, auto activation, auto banded, auto dims) {
    launch<dims.qk, dims.v, typename decltype(types)::scalar_t, decltype(activation), decltype(banded)::value>(
        params, activation, stream);
  });
}

}  // namespace cuda
}  // namespace actattn
