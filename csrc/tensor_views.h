// Turning tensors into the kernels' plain views (kernels/params.h).
#pragma once

#include <ATen/core/Tensor.h>

#include "../kernels/params.h"

namespace actattn {

// The tensor itself when its last dim is contiguous (any other strides are fine), else a copy.
at::Tensor with_contiguous_rows(const at::Tensor& t);

// Row view of a rank-4 tensor whose last dim is contiguous; head_group query heads share each of its
// heads (k and v of grouped-query attention).
RowView row_view(const at::Tensor& t, int64_t head_group = 1);

// The kernels' element type for a float32, float64, float16 or bfloat16 tensor.
ScalarKind scalar_kind(at::ScalarType dtype);

// Shape of a call from q (B, H, Nq, Dk), k (B, Hkv, Nk, Dk), v (B, Hkv, Nk, Dv).
AttentionShape attention_shape(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v);

}  // namespace actattn
