// CPU backend of the underscored ops (op_runners.h). The CPU kernels read and write every dtype in
// place (float16 and bfloat16 computed in float32: kernels/cpu/half_types.h), so inputs only need
// contiguous rows.
#include <torch/library.h>

#include "../kernels/cpu_isa.h"
#include "op_runners.h"

namespace actattn {
namespace {

struct CpuBackend {
  struct NoGuard {};
  static NoGuard guard(const at::Tensor&) { return {}; }
  static at::Tensor input(const at::Tensor& t) {
    return with_contiguous_rows(t);
  }
  static void quadratic_forward(const QuadraticParams& p) { quadratic_attention_forward_cpu(p); }
  static void quadratic_backward(const QuadraticParams& p) { quadratic_attention_backward_cpu(p); }
  static void linear_forward(const LinearParams& p) { linear_attention_forward_cpu(p); }
  static void linear_backward(const LinearParams& p) { linear_attention_backward_cpu(p); }
  static at::Tensor linear_forward_workspace(const LinearParams&, const at::TensorOptions&) { return {}; }
  static at::Tensor linear_backward_workspace(const LinearParams&, const at::TensorOptions&) { return {}; }
};

}  // namespace

TORCH_LIBRARY_IMPL(actattn, CPU, m) {
  m.impl("_attention_forward", &runners::attention_forward<CpuBackend>);
  m.impl("_attention_backward", &runners::attention_backward<CpuBackend>);
  m.impl("_linear_attention_forward", &runners::linear_attention_forward<CpuBackend>);
  m.impl("_linear_attention_backward", &runners::linear_attention_backward<CpuBackend>);
}

}  // namespace actattn
