// Entry points of the CPU kernels. Each reads its params struct (kernels/params.h) and dispatches
// dtype, activation / feature map and masking to a template through kernels/dispatch.h.
#pragma once

#include "../params.h"

namespace actattn {

void quadratic_attention_forward_cpu(const QuadraticParams& params);
void quadratic_attention_backward_cpu(const QuadraticParams& params);
void linear_attention_forward_cpu(const LinearParams& params);
void linear_attention_backward_cpu(const LinearParams& params);

}  // namespace actattn
