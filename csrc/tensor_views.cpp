#include "tensor_views.h"

#include <c10/util/Exception.h>

namespace actattn {

at::Tensor with_contiguous_rows(const at::Tensor& t) {
  return t.size(-1) == 1 || t.stride(-1) == 1 ? t : t.contiguous();
}

RowView row_view(const at::Tensor& t, int64_t head_group) {
  TORCH_INTERNAL_ASSERT(t.dim() == 4 && (t.numel() == 0 || t.size(3) == 1 || t.stride(3) == 1));
  RowView view;
  view.data = t.data_ptr();
  view.batch_stride = t.stride(0);
  view.head_stride = t.stride(1);
  view.row_stride = t.stride(2);
  view.head_group = head_group;
  return view;
}

ScalarKind scalar_kind(at::ScalarType dtype) {
  switch (dtype) {
    case at::kFloat: return ScalarKind::kFloat32;
    case at::kDouble: return ScalarKind::kFloat64;
    case at::kHalf: return ScalarKind::kFloat16;
    case at::kBFloat16: return ScalarKind::kBFloat16;
    default: TORCH_INTERNAL_ASSERT(false, "actattn: no kernel element type for ", dtype);
  }
}

AttentionShape attention_shape(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v) {
  AttentionShape s;
  s.batch = q.size(0);
  s.heads = q.size(1);
  s.q_len = q.size(2);
  s.k_len = k.size(2);
  s.qk_dim = q.size(3);
  s.v_dim = v.size(3);
  return s;
}

}  // namespace actattn
