// CUDA backend of the underscored ops (op_runners.h): kernels in kernels/cuda take every floating dtype
// natively (half types accumulate in float32), run on the current stream of the inputs' device, and
// never synchronise with the host. Compiled only into CUDA builds (setup.py, CMakeLists.txt).
#include <c10/cuda/CUDAStream.h>
#include <c10/cuda/CUDAGuard.h>
#include <torch/library.h>

#include "../../kernels/cuda/cuda_kernels.h"
#include "../../kernels/cuda/tensor_core_paths.h"
#include "../op_runners.h"

namespace actattn {
namespace {

// A half-precision call that the tensor-core kernels refuse runs the generic ones (one warp per row, no
// tensor cores): say so once per op and process (every time under torch.set_warn_always(True)), naming
// why. One instantiation per op, so that each has its own "once".
enum class Op { kAttention, kAttentionBackward, kLinear, kLinearBackward };

template <Op kOp>
void warn_if_generic(const char* op, const char* refusal) {
  if (refusal != nullptr) {
    TORCH_WARN_ONCE("actattn: ", op, " in float16 / bfloat16 runs the generic CUDA kernels (one warp per row, no ",
                    "tensor cores, many times slower) because ", refusal, ".");
  }
}

struct CudaBackend {
  static c10::cuda::CUDAGuard guard(const at::Tensor& t) { return c10::cuda::CUDAGuard(t.device()); }
  static at::Tensor input(const at::Tensor& t) { return with_contiguous_rows(t); }
  static cudaStream_t stream() { return c10::cuda::getCurrentCUDAStream().stream(); }
  static void quadratic_forward(const QuadraticParams& p) {
    warn_if_generic<Op::kAttention>("attention", cuda::quadratic_tensor_core_refusal(p, /*backward=*/false));
    quadratic_attention_forward_cuda(p, stream());
  }
  static void quadratic_backward(const QuadraticParams& p) {
    warn_if_generic<Op::kAttentionBackward>("attention backward",
                                            cuda::quadratic_tensor_core_refusal(p, /*backward=*/true));
    quadratic_attention_backward_cuda(p, stream());
  }
  static void linear_forward(const LinearParams& p) {
    warn_if_generic<Op::kLinear>("linear_attention", cuda::linear_tensor_core_refusal(p, /*backward=*/false));
    linear_attention_forward_cuda(p, stream());
  }
  static void linear_backward(const LinearParams& p) {
    warn_if_generic<Op::kLinearBackward>("linear_attention backward",
                                         cuda::linear_tensor_core_refusal(p, /*backward=*/true));
    linear_attention_backward_cuda(p, stream());
  }
  static at::Tensor linear_forward_workspace(const LinearParams& p, const at::TensorOptions& options) {
    return at::empty({linear_attention_forward_workspace(p)}, options);
  }
  static at::Tensor linear_backward_workspace(const LinearParams& p, const at::TensorOptions& options) {
    return at::empty({linear_attention_backward_workspace(p)}, options);
  }
};

}  // namespace

TORCH_LIBRARY_IMPL(actattn, CUDA, m) {
  m.impl("_attention_forward", &runners::attention_forward<CudaBackend>);
  m.impl("_attention_backward", &runners::attention_backward<CudaBackend>);
  m.impl("_linear_attention_forward", &runners::linear_attention_forward<CudaBackend>);
  m.impl("_linear_attention_backward", &runners::linear_attention_backward<CudaBackend>);
}

}  // namespace actattn
