// The underscored forward/backward ops for any backend: checks, tensor allocation, params, and a call
// into the backend's kernels. A Backend provides
//   guard(t)         an RAII device guard for t's device (a no-op object on the CPU),
//   input(t)         t as its kernels take it (rows contiguous; the CPU also widens half types),
//   quadratic_forward / quadratic_backward / linear_forward / linear_backward (params),
//   linear_backward_workspace(params, options)   the scratch tensor its linear backward needs.
// Row statistics, states and workspaces are in the accumulation type (float32, or float64).
#pragma once

#include <ATen/ATen.h>

#include <optional>
#include <tuple>
#include <vector>

#include "checks.h"
#include "op_params.h"
#include "ops.h"
#include "options.h"
#include "tensor_views.h"

namespace actattn {
namespace runners {

inline at::TensorOptions accumulation_options(const at::Tensor& t) {
  return t.options().dtype(accumulation_dtype(t.scalar_type()));
}

inline const void* optional_data(const OptionalTensor& t) { return t ? t->data_ptr() : nullptr; }

inline OptionalTensor contiguous_or_none(const OptionalTensor& t) {
  if (!t) return std::nullopt;
  return t->contiguous();
}

// Key lengths as the kernels read them: contiguous int64 on the inputs' device.
inline OptionalTensor as_key_lengths(const OptionalTensor& t) {
  if (!t) return std::nullopt;
  return t->to(at::kLong).contiguous();
}

inline const int64_t* key_lengths_data(const OptionalTensor& t) { return t ? t->data_ptr<int64_t>() : nullptr; }

template <typename Backend>
std::tuple<at::Tensor, at::Tensor> attention_forward(const at::Tensor& q, const at::Tensor& k,
                                                         const at::Tensor& v, c10::string_view activation,
                                                         bool causal, std::optional<double> scale,
                                                         std::optional<double> bias, std::optional<double> divisor,
                                                         const OptionalTensor& key_lengths) {
  check_qkv("actattn.attention", q, k, v);
  [[maybe_unused]] const auto device_guard = Backend::guard(q);
  check_score_options(activation, scale, bias, divisor);
  check_key_lengths(key_lengths, q);
  const at::Tensor qw = Backend::input(q), kw = Backend::input(k), vw = Backend::input(v);
  QuadraticParams p = quadratic_params(qw, kw, vw, activation, causal, scale, bias, divisor);
  const OptionalTensor lengths = as_key_lengths(key_lengths);
  p.key_lengths = key_lengths_data(lengths);

  at::Tensor out = at::empty({p.shape.batch, p.shape.heads, p.shape.q_len, p.shape.v_dim}, qw.options());
  const bool softmax = p.activation == ScoreActivation::kSoftmax;
  at::Tensor lse = at::empty(softmax ? std::vector<int64_t>{p.shape.batch, p.shape.heads, p.shape.q_len}
                                     : std::vector<int64_t>{0},
                             accumulation_options(qw));
  p.q = row_view(qw);
  p.k = row_view(kw);
  p.v = row_view(vw);
  p.out = row_view(out);
  p.log_sum_exp.data = lse.data_ptr();
  Backend::quadratic_forward(p);
  return {out.to(q.scalar_type()), lse};
}

template <typename Backend>
std::tuple<at::Tensor, at::Tensor, at::Tensor> attention_backward(
    const at::Tensor& grad_out, const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, const at::Tensor& out,
    const at::Tensor& log_sum_exp, c10::string_view activation, bool causal, std::optional<double> scale,
    std::optional<double> bias, std::optional<double> divisor, const OptionalTensor& key_lengths) {
  const char* op = "actattn.attention backward";
  check_qkv(op, q, k, v);
  [[maybe_unused]] const auto device_guard = Backend::guard(q);
  check_score_options(activation, scale, bias, divisor);
  check_key_lengths(key_lengths, q);
  const bool softmax = parse_score_activation(activation) == ScoreActivation::kSoftmax;
  check_backward_tensors(op, q, v, out, grad_out, "log_sum_exp", log_sum_exp, /*row_stat_read=*/softmax);
  const at::Tensor qw = Backend::input(q), kw = Backend::input(k), vw = Backend::input(v), ow = Backend::input(out), gw = Backend::input(grad_out);
  const at::Tensor lse = softmax ? log_sum_exp.contiguous() : at::Tensor();
  QuadraticParams p = quadratic_params(qw, kw, vw, activation, causal, scale, bias, divisor);
  const OptionalTensor lengths = as_key_lengths(key_lengths);
  p.key_lengths = key_lengths_data(lengths);

  at::Tensor grad_q = at::empty_like(qw, at::MemoryFormat::Contiguous);
  at::Tensor grad_k = at::empty_like(kw, at::MemoryFormat::Contiguous);
  at::Tensor grad_v = at::empty_like(vw, at::MemoryFormat::Contiguous);
  p.q = row_view(qw);
  p.k = row_view(kw);
  p.v = row_view(vw);
  p.out = row_view(ow);
  // Only softmax reads the row statistics; the other activations get null pointers.
  const at::Tensor delta = softmax ? at::empty_like(lse) : at::Tensor();
  p.log_sum_exp.data = softmax ? lse.data_ptr() : nullptr;
  p.delta.data = softmax ? delta.data_ptr() : nullptr;
  p.grad_out = row_view(gw);
  p.grad_q = row_view(grad_q);
  p.grad_k = row_view(grad_k);
  p.grad_v = row_view(grad_v);
  Backend::quadratic_backward(p);
  return {grad_q.to(q.scalar_type()), grad_k.to(k.scalar_type()), grad_v.to(v.scalar_type())};
}

template <typename Backend>
std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> linear_attention_forward(
    const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, c10::string_view feature_map, bool causal,
    bool normalize, double eps, std::optional<double> scale, const OptionalTensor& initial_state,
    const OptionalTensor& initial_normalizer, const OptionalTensor& key_lengths) {
  check_qkv("actattn.linear_attention", q, k, v);
  [[maybe_unused]] const auto device_guard = Backend::guard(q);
  check_linear_options(q, k, v, feature_map, causal, eps, scale, initial_state, initial_normalizer);
  check_key_lengths(key_lengths, q);
  const at::Tensor qw = Backend::input(q), kw = Backend::input(k), vw = Backend::input(v);
  const OptionalTensor state0 = contiguous_or_none(initial_state);
  const OptionalTensor norm0 = contiguous_or_none(initial_normalizer);

  LinearParams p = linear_params(qw, kw, vw, feature_map, causal, normalize, eps, scale);
  const OptionalTensor lengths = as_key_lengths(key_lengths);
  p.key_lengths = key_lengths_data(lengths);
  const auto& s = p.shape;
  at::Tensor out = at::empty({s.batch, s.heads, s.q_len, s.v_dim}, qw.options());
  at::Tensor final_state = at::empty({s.batch, s.heads, s.qk_dim, s.v_dim}, accumulation_options(qw));
  at::Tensor final_normalizer = at::empty({s.batch, s.heads, s.qk_dim}, accumulation_options(qw));
  at::Tensor denominator = at::empty(
      normalize ? std::vector<int64_t>{s.batch, s.heads, s.q_len} : std::vector<int64_t>{0}, accumulation_options(qw));
  p.q = row_view(qw);
  p.k = row_view(kw);
  p.v = row_view(vw);
  p.out = row_view(out);
  p.initial_state = optional_data(state0);
  p.initial_normalizer = optional_data(norm0);
  p.final_state = final_state.data_ptr();
  p.final_normalizer = final_normalizer.data_ptr();
  p.denominator.data = denominator.data_ptr();
  Backend::linear_forward(p);
  return {out.to(q.scalar_type()), final_state, final_normalizer, denominator};
}

template <typename Backend>
std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor> linear_attention_backward(
    const at::Tensor& grad_out, const OptionalTensor& grad_final_state, const OptionalTensor& grad_final_normalizer,
    const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, const at::Tensor& out,
    const at::Tensor& denominator, c10::string_view feature_map, bool causal, bool normalize, double eps,
    std::optional<double> scale, const OptionalTensor& initial_state, const OptionalTensor& initial_normalizer,
    const OptionalTensor& key_lengths) {
  const char* op = "actattn.linear_attention backward";
  check_qkv(op, q, k, v);
  [[maybe_unused]] const auto device_guard = Backend::guard(q);
  check_linear_options(q, k, v, feature_map, causal, eps, scale, initial_state, initial_normalizer);
  check_key_lengths(key_lengths, q);
  check_backward_tensors(op, q, v, out, grad_out, "denominator", denominator, /*row_stat_read=*/normalize);
  check_final_state_grads(op, q, v, grad_final_state, grad_final_normalizer);
  const at::Tensor qw = Backend::input(q), kw = Backend::input(k), vw = Backend::input(v), ow = Backend::input(out), gw = Backend::input(grad_out);
  const at::Tensor den = normalize ? denominator.contiguous() : at::Tensor();
  const OptionalTensor state0 = contiguous_or_none(initial_state);
  const OptionalTensor norm0 = contiguous_or_none(initial_normalizer);
  const OptionalTensor grad_state = contiguous_or_none(grad_final_state);
  const OptionalTensor grad_norm = contiguous_or_none(grad_final_normalizer);

  LinearParams p = linear_params(qw, kw, vw, feature_map, causal, normalize, eps, scale);
  const OptionalTensor lengths = as_key_lengths(key_lengths);
  p.key_lengths = key_lengths_data(lengths);
  const auto& s = p.shape;
  at::Tensor grad_initial_state = at::empty({s.batch, s.heads, s.qk_dim, s.v_dim}, accumulation_options(qw));
  at::Tensor grad_initial_normalizer = at::empty({s.batch, s.heads, s.qk_dim}, accumulation_options(qw));
  at::Tensor grad_q = at::empty_like(qw, at::MemoryFormat::Contiguous);
  at::Tensor grad_k = at::empty_like(kw, at::MemoryFormat::Contiguous);
  at::Tensor grad_v = at::empty_like(vw, at::MemoryFormat::Contiguous);

  p.q = row_view(qw);
  p.k = row_view(kw);
  p.v = row_view(vw);
  p.out = row_view(ow);
  p.initial_state = optional_data(state0);
  p.initial_normalizer = optional_data(norm0);
  p.denominator.data = normalize ? den.data_ptr() : nullptr;
  p.grad_out = row_view(gw);
  p.grad_final_state = optional_data(grad_state);
  p.grad_final_normalizer = optional_data(grad_norm);
  p.grad_q = row_view(grad_q);
  p.grad_k = row_view(grad_k);
  p.grad_v = row_view(grad_v);
  p.grad_initial_state = grad_initial_state.data_ptr();
  p.grad_initial_normalizer = grad_initial_normalizer.data_ptr();
  const at::Tensor workspace = Backend::linear_backward_workspace(p, accumulation_options(qw));
  p.workspace = workspace.defined() ? workspace.data_ptr() : nullptr;
  Backend::linear_backward(p);
  return {grad_q.to(q.scalar_type()), grad_k.to(k.scalar_type()), grad_v.to(v.scalar_type()), grad_initial_state,
          grad_initial_normalizer};
}

}  // namespace runners
}  // namespace actattn
