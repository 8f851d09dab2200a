// Params structs of each op from its tensors and options, shared by the CPU and CUDA ops. The tensor
// arguments are the kernel inputs (already widened on the CPU): their dtype is the kernels' element type.
#pragma once

#include <ATen/core/Tensor.h>
#include <c10/util/string_view.h>

#include <optional>

#include "../kernels/params.h"

namespace actattn {

// Everything of a quadratic call but the tensor views, with defaults applied.
QuadraticParams quadratic_params(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                                 c10::string_view activation, bool causal, std::optional<double> scale,
                                 std::optional<double> bias, std::optional<double> divisor);

// Everything of a linear call but the pointers, with defaults applied.
LinearParams linear_params(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                           c10::string_view feature_map, bool causal, bool normalize, double eps,
                           std::optional<double> scale);

}  // namespace actattn
