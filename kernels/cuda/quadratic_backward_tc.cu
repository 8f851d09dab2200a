// Launches the kernels of quadratic_backward_tc.cuh: dispatch of dtype, activation, masking and head dims.
#include "../dispatch.h"
#include "quadratic_backward_tc.cuh"
#include "tensor_core_paths.h"

namespace actattn {
namespace cuda {
namespace {

using namespace quadratic_backward_tc;

template <int kDk, int kDv, bool kCompact, typename T, typename Activation, bool kBanded>
void launch_key_grads(const QuadraticParams& params, Activation activation, cudaStream_t stream) {
  const AttentionShape& s = params.shape;
  auto kernel = key_grads_kernel<T, Activation, kBanded, kDk, kDv, kCompact>;
  constexpr int shared = key_grads_shared_bytes<kDk, kDv, kCompact>();
  allow_dynamic_shared(kernel, shared, "quadratic_attention_backward (dK, dV, tensor cores)");
  const dim3 grid(static_cast<unsigned>(s.batch * s.heads), blocks_for(s.k_len, key_grads_block_rows<kDk, kDv>()));
  kernel<<<grid, key_grads_threads<kDk, kDv>(), shared, stream>>>(params, activation);
  check_launch("quadratic_attention_backward (dK, dV, tensor cores)");
}

template <int kDk, int kDv, typename T, typename Activation, bool kBanded>
void launch(const QuadraticParams& params, Activation activation, cudaStream_t stream) {
  const AttentionShape& s = params.shape;
  const unsigned bh = static_cast<unsigned>(s.batch * s.heads);
  if (s.k_len > 0 && params.grad_k.data != nullptr) {
    // The compact tiles where the GPU does not grant the full ones' shared memory (sm_86 / 89 at D = 128,
    // 256 and (192, 128)) or where a test asks for them.
    if constexpr (key_grads_has_compact_tiles<kDk, kDv>()) {
      if (compact_tiles_forced() || key_grads_shared_bytes<kDk, kDv>() > device_shared_bytes_optin()) {
        launch_key_grads<kDk, kDv, true, T, Activation, kBanded>(params, activation, stream);
      } else {
        launch_key_grads<kDk, kDv, false, T, Activation, kBanded>(params, activation, stream);
      }
    } else {
      launch_key_grads<kDk, kDv, false, T, Activation, kBanded>(params, activation, stream);
    }
  }
  if (s.q_len > 0 && params.grad_q.data != nullptr) {
    auto kernel = query_grads_kernel<T, Activation, kBanded, kDk, kDv>;
    constexpr int shared = query_grads_shared_bytes<kDk, kDv>();
    allow_dynamic_shared(kernel, shared, "quadratic_attention_backward (dQ, tensor cores)");
    kernel<<<dim3(bh, blocks_for(s.q_len, kBlockRows)), kThreads, shared, stream>>>(params, activation);
    check_launch("quadratic_attention_backward (dQ, tensor cores)");
  }
}

}  // namespace

int quadratic_backward_tensor_core_shared_bytes(int64_t qk_dim, int64_t v_dim) {
  int bytes = 0;
  dispatch_quadratic_head_dims(qk_dim, v_dim, [&](auto dims) { bytes = least_shared_bytes<dims.qk, dims.v>(); });
  return bytes;
}

void quadratic_backward_tensor_core(const QuadraticParams& params, cudaStream_t stream) {
  if (params.shape.batch * params.shape.heads == 0) return;
  dispatch_quadratic_tensor_core(params, [&](auto types, auto activation, auto banded, auto dims) {
    launch<dims.qk, dims.v, typename decltype(types)::scalar_t, decltype(activation), decltype(banded)::value>(
        params, activation, stream);
  });
}

}  // namespace cuda
}  // namespace actattn
