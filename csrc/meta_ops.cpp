// Meta kernels: output shapes and dtypes only, with symbolic sizes, so FakeTensor tracing
// (torch.compile, torch.export, opcheck) sees the same outputs and the same input errors as the CPU
// and CUDA kernels without running them.
#include <ATen/ATen.h>
#include <torch/library.h>

#include "checks.h"
#include "ops.h"
#include "options.h"

namespace actattn {
namespace {

at::TensorOptions accumulation_options(const at::Tensor& q) {
  return q.options().dtype(accumulation_dtype(q.scalar_type()));
}

at::Tensor empty_rows(const at::Tensor& q, c10::SymInt batch, c10::SymInt heads, c10::SymInt rows, bool present) {
  if (!present) return at::empty({0}, accumulation_options(q));
  return at::empty_symint({std::move(batch), std::move(heads), std::move(rows)}, accumulation_options(q));
}

std::tuple<at::Tensor, at::Tensor> attention_forward_meta(const at::Tensor& q, const at::Tensor& k,
                                                          const at::Tensor& v, c10::string_view activation,
                                                          bool /*causal*/, std::optional<double> scale,
                                                          std::optional<double> bias, std::optional<double> divisor,
                                                          const OptionalTensor& key_lengths) {
  check_qkv("actattn.attention", q, k, v);
  check_score_options(activation, scale, bias, divisor);
  check_key_lengths(key_lengths, q);
  at::Tensor out = at::empty_symint({q.sym_size(0), q.sym_size(1), q.sym_size(2), v.sym_size(3)}, q.options());
  const bool softmax = parse_score_activation(activation) == ScoreActivation::kSoftmax;
  return {out, empty_rows(q, q.sym_size(0), q.sym_size(1), q.sym_size(2), softmax)};
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> attention_backward_meta(
    const at::Tensor& grad_out, const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, const at::Tensor& out,
    const at::Tensor& log_sum_exp, c10::string_view activation, bool /*causal*/, std::optional<double> scale,
    std::optional<double> bias, std::optional<double> divisor, const OptionalTensor& key_lengths) {
  const char* op = "actattn.attention backward";
  check_qkv(op, q, k, v);
  check_score_options(activation, scale, bias, divisor);
  check_key_lengths(key_lengths, q);
  const bool softmax = parse_score_activation(activation) == ScoreActivation::kSoftmax;
  check_backward_tensors(op, q, v, out, grad_out, "log_sum_exp", log_sum_exp, softmax);
  return {at::empty_symint(q.sym_sizes(), q.options()), at::empty_symint(k.sym_sizes(), k.options()),
          at::empty_symint(v.sym_sizes(), v.options())};
}

at::Tensor state_like(const at::Tensor& q, const at::Tensor& v) {
  return at::empty_symint({q.sym_size(0), q.sym_size(1), q.sym_size(3), v.sym_size(3)}, accumulation_options(q));
}

at::Tensor normalizer_like(const at::Tensor& q) {
  return at::empty_symint({q.sym_size(0), q.sym_size(1), q.sym_size(3)}, accumulation_options(q));
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> linear_attention_forward_meta(
    const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, c10::string_view feature_map, bool causal,
    bool normalize, double eps, std::optional<double> scale, const OptionalTensor& initial_state,
    const OptionalTensor& initial_normalizer, const OptionalTensor& key_lengths) {
  check_qkv("actattn.linear_attention", q, k, v);
  check_linear_options(q, k, v, feature_map, causal, eps, scale, initial_state, initial_normalizer);
  check_key_lengths(key_lengths, q);
  at::Tensor out = at::empty_symint({q.sym_size(0), q.sym_size(1), q.sym_size(2), v.sym_size(3)}, q.options());
  return {out, state_like(q, v), normalizer_like(q), empty_rows(q, q.sym_size(0), q.sym_size(1), q.sym_size(2), normalize)};
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor> linear_attention_backward_meta(
    const at::Tensor& grad_out, const OptionalTensor& grad_final_state,
    const OptionalTensor& grad_final_normalizer, const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
    const at::Tensor& out, const at::Tensor& denominator, c10::string_view feature_map, bool causal,
    bool normalize, double eps, std::optional<double> scale, const OptionalTensor& initial_state,
    const OptionalTensor& initial_normalizer, const OptionalTensor& key_lengths) {
  const char* op = "actattn.linear_attention backward";
  check_qkv(op, q, k, v);
  check_linear_options(q, k, v, feature_map, causal, eps, scale, initial_state, initial_normalizer);
  check_key_lengths(key_lengths, q);
  check_backward_tensors(op, q, v, out, grad_out, "denominator", denominator, normalize);
  check_final_state_grads(op, q, v, grad_final_state, grad_final_normalizer);
  return {at::empty_symint(q.sym_sizes(), q.options()), at::empty_symint(k.sym_sizes(), k.options()),
          at::empty_symint(v.sym_sizes(), v.options()), state_like(q, v), normalizer_like(q)};
}

}  // namespace

TORCH_LIBRARY_IMPL(actattn, Meta, m) {
  m.impl("_attention_forward", &attention_forward_meta);
  m.impl("_attention_backward", &attention_backward_meta);
  m.impl("_linear_attention_forward", &linear_attention_forward_meta);
  m.impl("_linear_attention_backward", &linear_attention_backward_meta);
}

}  // namespace actattn
