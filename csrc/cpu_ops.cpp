// CPU implementations of the underscored forward/backward ops: checks, tensor allocation, and a call
// into kernels/cpu. The CPU kernels compute in float32 or float64; float16 and bfloat16 inputs are
// widened to float32 on the way in and outputs rounded back, which costs two copies and keeps one
// kernel per precision.
#include <ATen/ATen.h>
#include <torch/library.h>

#include "../kernels/cpu/cpu_kernels.h"
#include "checks.h"
#include "ops.h"
#include "options.h"
#include "tensor_views.h"

namespace actattn {
namespace {

// t in the CPU kernels' precision with contiguous rows.
at::Tensor widen(const at::Tensor& t) {
  return with_contiguous_rows(t.to(accumulation_dtype(t.scalar_type())));
}

const void* optional_data(const OptionalTensor& t) { return t ? t->data_ptr() : nullptr; }

OptionalTensor contiguous_or_none(const OptionalTensor& t) {
  if (!t) return std::nullopt;
  return t->contiguous();
}

// Everything of a quadratic call but the tensor views, with defaults applied.
QuadraticParams quadratic_params(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                                 c10::string_view activation, bool causal, std::optional<double> scale,
                                 std::optional<double> bias, std::optional<double> divisor) {
  QuadraticParams p;
  p.dtype = scalar_kind(accumulation_dtype(q.scalar_type()));
  p.activation = parse_score_activation(activation);
  p.causal = causal;
  p.shape = attention_shape(q, k, v);
  const ScoreConstants c = resolve_score_constants(p.activation, p.shape.k_len, p.shape.qk_dim, scale, bias, divisor);
  p.scale = c.scale;
  p.bias = c.bias;
  p.divisor = c.divisor;
  return p;
}

std::tuple<at::Tensor, at::Tensor> cpu_attention_forward(const at::Tensor& q, const at::Tensor& k,
                                                         const at::Tensor& v, c10::string_view activation,
                                                         bool causal, std::optional<double> scale,
                                                         std::optional<double> bias, std::optional<double> divisor) {
  check_qkv("actattn.attention", q, k, v);
  check_score_options(activation, scale, bias, divisor);
  const at::Tensor qw = widen(q), kw = widen(k), vw = widen(v);
  QuadraticParams p = quadratic_params(q, k, v, activation, causal, scale, bias, divisor);

  at::Tensor out = at::empty({p.shape.batch, p.shape.heads, p.shape.q_len, p.shape.v_dim}, qw.options());
  const bool softmax = p.activation == ScoreActivation::kSoftmax;
  at::Tensor lse = at::empty(softmax ? std::vector<int64_t>{p.shape.batch, p.shape.heads, p.shape.q_len}
                                     : std::vector<int64_t>{0},
                             qw.options());
  p.q = row_view(qw);
  p.k = row_view(kw);
  p.v = row_view(vw);
  p.out = row_view(out);
  p.log_sum_exp.data = lse.data_ptr();
  quadratic_attention_forward_cpu(p);
  return {out.to(q.scalar_type()), lse};
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> cpu_attention_backward(
    const at::Tensor& grad_out, const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, const at::Tensor& out,
    const at::Tensor& log_sum_exp, c10::string_view activation, bool causal, std::optional<double> scale,
    std::optional<double> bias, std::optional<double> divisor) {
  const char* op = "actattn.attention backward";
  check_qkv(op, q, k, v);
  check_score_options(activation, scale, bias, divisor);
  check_same_layout(op, "grad_out", grad_out, out);
  const at::Tensor qw = widen(q), kw = widen(k), vw = widen(v), ow = widen(out), gw = widen(grad_out);
  const at::Tensor lse = log_sum_exp.contiguous();
  QuadraticParams p = quadratic_params(q, k, v, activation, causal, scale, bias, divisor);
  TORCH_CHECK(p.activation != ScoreActivation::kSoftmax ||
                  lse.numel() == p.shape.batch * p.shape.heads * p.shape.q_len,
              op, ": log_sum_exp must have ", p.shape.batch * p.shape.heads * p.shape.q_len, " elements, got ",
              lse.numel());

  at::Tensor grad_q = at::empty_like(qw, at::MemoryFormat::Contiguous);
  at::Tensor grad_k = at::empty_like(kw, at::MemoryFormat::Contiguous);
  at::Tensor grad_v = at::empty_like(vw, at::MemoryFormat::Contiguous);
  p.q = row_view(qw);
  p.k = row_view(kw);
  p.v = row_view(vw);
  p.out = row_view(ow);
  p.log_sum_exp.data = lse.data_ptr();
  at::Tensor delta = at::empty({lse.numel()}, lse.options());
  p.delta.data = delta.data_ptr();
  p.grad_out = row_view(gw);
  p.grad_q = row_view(grad_q);
  p.grad_k = row_view(grad_k);
  p.grad_v = row_view(grad_v);
  quadratic_attention_backward_cpu(p);
  return {grad_q.to(q.scalar_type()), grad_k.to(k.scalar_type()), grad_v.to(v.scalar_type())};
}

// Everything of a linear call but the pointers, with defaults applied.
LinearParams linear_params(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                           c10::string_view feature_map, bool causal, bool normalize, double eps,
                           std::optional<double> scale) {
  LinearParams p;
  p.dtype = scalar_kind(accumulation_dtype(q.scalar_type()));
  p.feature_map = parse_feature_map(feature_map);
  p.causal = causal;
  p.normalize = normalize;
  p.shape = attention_shape(q, k, v);
  p.scale = resolve_linear_scale(p.shape.qk_dim, scale);
  p.eps = eps;
  return p;
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> cpu_linear_attention_forward(
    const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, c10::string_view feature_map, bool causal,
    bool normalize, double eps, std::optional<double> scale, const OptionalTensor& initial_state,
    const OptionalTensor& initial_normalizer) {
  check_qkv("actattn.linear_attention", q, k, v);
  check_linear_options(q, k, v, feature_map, causal, eps, scale, initial_state, initial_normalizer);
  const at::Tensor qw = widen(q), kw = widen(k), vw = widen(v);
  const OptionalTensor state0 = contiguous_or_none(initial_state);
  const OptionalTensor norm0 = contiguous_or_none(initial_normalizer);

  LinearParams p = linear_params(q, k, v, feature_map, causal, normalize, eps, scale);
  const auto& s = p.shape;
  at::Tensor out = at::empty({s.batch, s.heads, s.q_len, s.v_dim}, qw.options());
  at::Tensor final_state = at::empty({s.batch, s.heads, s.qk_dim, s.v_dim}, qw.options());
  at::Tensor final_normalizer = at::empty({s.batch, s.heads, s.qk_dim}, qw.options());
  at::Tensor denominator =
      at::empty(normalize ? std::vector<int64_t>{s.batch, s.heads, s.q_len} : std::vector<int64_t>{0}, qw.options());
  p.q = row_view(qw);
  p.k = row_view(kw);
  p.v = row_view(vw);
  p.out = row_view(out);
  p.initial_state = optional_data(state0);
  p.initial_normalizer = optional_data(norm0);
  p.final_state = final_state.data_ptr();
  p.final_normalizer = final_normalizer.data_ptr();
  p.denominator.data = denominator.data_ptr();
  linear_attention_forward_cpu(p);
  return {out.to(q.scalar_type()), final_state, final_normalizer, denominator};
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor> cpu_linear_attention_backward(
    const at::Tensor& grad_out, const OptionalTensor& grad_final_state, const OptionalTensor& grad_final_normalizer,
    const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, const at::Tensor& out,
    const at::Tensor& denominator, c10::string_view feature_map, bool causal, bool normalize, double eps,
    std::optional<double> scale, const OptionalTensor& initial_state, const OptionalTensor& initial_normalizer) {
  const char* op = "actattn.linear_attention backward";
  check_qkv(op, q, k, v);
  check_linear_options(q, k, v, feature_map, causal, eps, scale, initial_state, initial_normalizer);
  check_same_layout(op, "grad_out", grad_out, out);
  const at::Tensor qw = widen(q), kw = widen(k), vw = widen(v), ow = widen(out), gw = widen(grad_out);
  const at::Tensor den = denominator.contiguous();
  const OptionalTensor state0 = contiguous_or_none(initial_state);
  const OptionalTensor norm0 = contiguous_or_none(initial_normalizer);
  const OptionalTensor grad_state = contiguous_or_none(grad_final_state);
  const OptionalTensor grad_norm = contiguous_or_none(grad_final_normalizer);

  LinearParams p = linear_params(q, k, v, feature_map, causal, normalize, eps, scale);
  const auto& s = p.shape;
  TORCH_CHECK(!normalize || den.numel() == s.batch * s.heads * s.q_len, op, ": denominator must have ",
              s.batch * s.heads * s.q_len, " elements, got ", den.numel());
  at::Tensor grad_initial_state = at::empty({s.batch, s.heads, s.qk_dim, s.v_dim}, qw.options());
  at::Tensor grad_initial_normalizer = at::empty({s.batch, s.heads, s.qk_dim}, qw.options());
  if (grad_state) check_same_layout(op, "grad_final_state", *grad_state, grad_initial_state);
  if (grad_norm) check_same_layout(op, "grad_final_normalizer", *grad_norm, grad_initial_normalizer);
  at::Tensor grad_q = at::empty_like(qw, at::MemoryFormat::Contiguous);
  at::Tensor grad_k = at::empty_like(kw, at::MemoryFormat::Contiguous);
  at::Tensor grad_v = at::empty_like(vw, at::MemoryFormat::Contiguous);

  p.q = row_view(qw);
  p.k = row_view(kw);
  p.v = row_view(vw);
  p.out = row_view(ow);
  p.initial_state = optional_data(state0);
  p.initial_normalizer = optional_data(norm0);
  p.denominator.data = den.data_ptr();
  p.grad_out = row_view(gw);
  p.grad_final_state = optional_data(grad_state);
  p.grad_final_normalizer = optional_data(grad_norm);
  p.grad_q = row_view(grad_q);
  p.grad_k = row_view(grad_k);
  p.grad_v = row_view(grad_v);
  p.grad_initial_state = grad_initial_state.data_ptr();
  p.grad_initial_normalizer = grad_initial_normalizer.data_ptr();
  linear_attention_backward_cpu(p);
  return {grad_q.to(q.scalar_type()), grad_k.to(k.scalar_type()), grad_v.to(v.scalar_type()), grad_initial_state,
          grad_initial_normalizer};
}

}  // namespace

TORCH_LIBRARY_IMPL(actattn, CPU, m) {
  m.impl("_attention_forward", &cpu_attention_forward);
  m.impl("_attention_backward", &cpu_attention_backward);
  m.impl("_linear_attention_forward", &cpu_linear_attention_forward);
  m.impl("_linear_attention_backward", &cpu_linear_attention_backward);
}

}  // namespace actattn
