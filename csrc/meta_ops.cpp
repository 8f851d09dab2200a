// Meta kernels: output shapes and dtypes only, with symbolic sizes, so FakeTensor tracing
// (torch.compile, torch.export, opcheck) sees the same outputs and the same input errors as the CPU
// and CUDA kernels without running them.
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <torch/library.h>

#include "checks.h"
#include "op_options.h"

namespace actattn {
namespace {

at::TensorOptions accumulation_options(const at::Tensor& q) {
  return q.options().dtype(accumulation_dtype(q.scalar_type()));
}

// A (batch, heads, q_len) row statistic of q's call, or an empty tensor when the op has none.
at::Tensor row_stats_like(const at::Tensor& q, bool present) {
  if (!present) return at::empty({0}, accumulation_options(q));
  return at::empty_symint({q.sym_size(0), q.sym_size(1), q.sym_size(2)}, accumulation_options(q));
}

at::Tensor output_like(const at::Tensor& q, const at::Tensor& v) {
  return at::empty_symint({q.sym_size(0), q.sym_size(1), q.sym_size(2), v.sym_size(3)}, q.options());
}

std::tuple<at::Tensor, at::Tensor> attention_forward_meta(const at::Tensor& q, const at::Tensor& k,
                                                          const at::Tensor& v ACTATTN_ATTENTION_OPTIONS(ACTATTN_PARAM)
                                                              ACTATTN_ATTENTION_INPUTS(ACTATTN_PARAM)) {
  const char* op = "actattn.attention";
  const AttentionSpec spec = check_attention_call(op, q, k, v ACTATTN_ATTENTION_OPTIONS(ACTATTN_ARG)
      ACTATTN_ATTENTION_INPUTS(ACTATTN_ARG));
  return {output_like(q, v), row_stats_like(q, spec.softmax())};
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> attention_backward_meta(
    const at::Tensor& grad_out, const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, const at::Tensor& out,
    const at::Tensor& log_sum_exp ACTATTN_ATTENTION_OPTIONS(ACTATTN_PARAM) ACTATTN_ATTENTION_INPUTS(ACTATTN_PARAM),
    std::array<bool, 3> output_mask) {
  const char* op = "actattn.attention backward";
  const AttentionSpec spec = check_attention_call(op, q, k, v ACTATTN_ATTENTION_OPTIONS(ACTATTN_ARG)
      ACTATTN_ATTENTION_INPUTS(ACTATTN_ARG));
  check_backward_tensors(op, q, v, out, grad_out, "log_sum_exp", log_sum_exp, spec.softmax());
  auto like = [&](bool wanted, const at::Tensor& t) {
    return wanted ? at::empty_symint(t.sym_sizes(), t.options()) : at::Tensor();
  };
  return {like(output_mask[0], q), like(output_mask[1], k), like(output_mask[2], v)};
}

// Linear attention's state and normalizer: one per key/value head.
at::Tensor state_like(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v) {
  return at::empty_symint({q.sym_size(0), k.sym_size(1), q.sym_size(3), v.sym_size(3)}, accumulation_options(q));
}

at::Tensor normalizer_like(const at::Tensor& q, const at::Tensor& k) {
  return at::empty_symint({q.sym_size(0), k.sym_size(1), q.sym_size(3)}, accumulation_options(q));
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> linear_attention_forward_meta(
    const at::Tensor& q, const at::Tensor& k, const at::Tensor& v ACTATTN_LINEAR_OPTIONS(ACTATTN_PARAM),
    const OptionalTensor& initial_state, const OptionalTensor& initial_normalizer, const OptionalTensor& key_lengths) {
  const char* op = "actattn.linear_attention";
  const LinearSpec spec = check_linear_call(op, q, k, v ACTATTN_LINEAR_OPTIONS(ACTATTN_ARG), initial_state,
                                            initial_normalizer, key_lengths);
  return {output_like(q, v), state_like(q, k, v), normalizer_like(q, k), row_stats_like(q, spec.normalize)};
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor> linear_attention_backward_meta(
    const at::Tensor& grad_out, const OptionalTensor& grad_final_state, const OptionalTensor& grad_final_normalizer,
    const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, const at::Tensor& out,
    const at::Tensor& denominator ACTATTN_LINEAR_OPTIONS(ACTATTN_PARAM), const OptionalTensor& initial_state,
    const OptionalTensor& initial_normalizer, const OptionalTensor& key_lengths, std::array<bool, 3> output_mask,
    const OptionalTensor& saved_state, const OptionalTensor& saved_normalizer) {
  const char* op = "actattn.linear_attention backward";
  const LinearSpec spec = check_linear_call(op, q, k, v ACTATTN_LINEAR_OPTIONS(ACTATTN_ARG), initial_state,
                                            initial_normalizer, key_lengths);
  check_backward_tensors(op, q, v, out, grad_out, "denominator", denominator, spec.normalize);
  check_final_state_grads(op, q, k, v, grad_final_state, grad_final_normalizer);
  check_saved_state(op, spec, q, k, v, saved_state, saved_normalizer);
  auto like = [&](bool wanted, const at::Tensor& t) {
    return wanted ? at::empty_symint(t.sym_sizes(), t.options()) : at::Tensor();
  };
  return {like(output_mask[0], q), like(output_mask[1], k), like(output_mask[2], v), state_like(q, k, v),
          normalizer_like(q, k)};
}

}  // namespace

TORCH_LIBRARY_IMPL(actattn, Meta, m) {
  m.impl("_attention_forward", &attention_forward_meta);
  m.impl("_attention_backward", &attention_backward_meta);
  m.impl("_linear_attention_forward", &linear_attention_forward_meta);
  m.impl("_linear_attention_backward", &linear_attention_backward_meta);
}

}  // namespace actattn
