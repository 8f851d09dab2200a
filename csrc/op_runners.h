// The underscored forward/backward ops for any backend: checks, tensor allocation, params, and a call
// into the backend's kernels. Each op parses its options once (op_options.h) and works on the parsed
// spec from there. A Backend provides
//   guard(t)         an RAII device guard for t's device (a no-op object on the CPU),
//   input(t)         t as its kernels take it (rows contiguous),
//   quadratic_forward / quadratic_backward / linear_forward / linear_backward (params),
//   linear_forward_workspace / linear_backward_workspace(params, options)   the scratch tensor its linear
//                    forward / backward needs (undefined: none).
// Both backward kernels take null grad_q, or null grad_k with grad_v, and skip that work.
// Row statistics, states and workspaces are in the accumulation type (float32, or float64).
#pragma once

#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/empty_like.h>
#include <ATen/ops/zeros.h>

#include <array>
#include <optional>
#include <tuple>
#include <vector>

#include "checks.h"
#include "op_options.h"
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

// The seed as the kernels read it (only when dropout is on: check_dropout_seed guarantees it is there).
inline const int64_t* dropout_seed_data(const AttentionSpec& spec, const OptionalTensor& t) {
  return spec.dropout_p > 0.0 ? t->data_ptr<int64_t>() : nullptr;
}

// Query heads per key/value head (1 unless grouped-query attention).
inline int64_t head_group(const at::Tensor& q, const at::Tensor& k) {
  return q.size(1) == k.size(1) ? 1 : q.size(1) / k.size(1);  // also when there are no heads
}

// The gradient of a shared key/value head from its per-query-head gradient (B, H, ...): the sum over
// each group of query heads, (B, H / group, ...). Summed before rounding to the input dtype.
inline at::Tensor sum_over_head_groups(const at::Tensor& per_query_head, int64_t group) {
  if (group == 1) return per_query_head;
  std::vector<int64_t> grouped = per_query_head.sizes().vec();
  grouped[1] /= group;
  grouped.insert(grouped.begin() + 2, group);
  return per_query_head.view(grouped).sum(2);
}

// Grouped-query linear attention runs one state per query head (each built from its shared key/value
// head: the same state computed group times). A per-key/value-head state enters every head of its group.
inline OptionalTensor state_per_query_head(const OptionalTensor& state, int64_t group) {
  if (!state || group == 1) return state;
  return state->repeat_interleave(group, 1);
}

// A gradient with respect to a per-key/value-head state (the final state) flows into the first head of
// each group only: the group's copies are one state, whose gradient must be counted once.
inline OptionalTensor final_state_grad_per_query_head(const OptionalTensor& grad, int64_t group) {
  if (!grad || group == 1) return grad;
  std::vector<int64_t> grouped = grad->sizes().vec();
  grouped.insert(grouped.begin() + 2, group);
  at::Tensor spread = at::zeros(grouped, grad->options());
  spread.select(2, 0).copy_(*grad);
  grouped.erase(grouped.begin() + 2);
  grouped[1] *= group;
  return spread.view(grouped);
}

// The state of each key/value head from the per-query-head states: the group's first (they are equal).
inline at::Tensor state_per_kv_head(const at::Tensor& per_query_head, int64_t group) {
  if (group == 1) return per_query_head;
  std::vector<int64_t> grouped = per_query_head.sizes().vec();
  grouped[1] /= group;
  grouped.insert(grouped.begin() + 2, group);
  return per_query_head.view(grouped).select(2, 0).contiguous();
}

template <typename Backend>
std::tuple<at::Tensor, at::Tensor> attention_forward(const at::Tensor& q, const at::Tensor& k,
                                                     const at::Tensor& v ACTATTN_ATTENTION_OPTIONS(ACTATTN_PARAM)
                                                         ACTATTN_ATTENTION_INPUTS(ACTATTN_PARAM)) {
  const char* op = "actattn.attention";
  const AttentionSpec spec = check_attention_call(op, q, k, v ACTATTN_ATTENTION_OPTIONS(ACTATTN_ARG)
      ACTATTN_ATTENTION_INPUTS(ACTATTN_ARG));
  [[maybe_unused]] const auto device_guard = Backend::guard(q);
  const at::Tensor qw = Backend::input(q), kw = Backend::input(k), vw = Backend::input(v);
  QuadraticParams p = quadratic_params(spec, qw, kw, vw);
  const OptionalTensor lengths = as_key_lengths(key_lengths);
  p.key_lengths = key_lengths_data(lengths);
  p.dropout_seed = dropout_seed_data(spec, dropout_seed);

  const auto& s = p.shape;
  at::Tensor out = at::empty({s.batch, s.heads, s.q_len, s.v_dim}, qw.options());
  at::Tensor lse = at::empty(spec.softmax() ? std::vector<int64_t>{s.batch, s.heads, s.q_len} : std::vector<int64_t>{0},
                             accumulation_options(qw));
  const int64_t group = head_group(q, k);
  p.q = row_view(qw);
  p.k = row_view(kw, group);
  p.v = row_view(vw, group);
  p.out = row_view(out);
  p.log_sum_exp.data = lse.data_ptr();
  Backend::quadratic_forward(p);
  return {out.to(q.scalar_type()), lse};
}

template <typename Backend>
std::tuple<at::Tensor, at::Tensor, at::Tensor> attention_backward(
    const at::Tensor& grad_out, const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, const at::Tensor& out,
    const at::Tensor& log_sum_exp ACTATTN_ATTENTION_OPTIONS(ACTATTN_PARAM) ACTATTN_ATTENTION_INPUTS(ACTATTN_PARAM),
    std::array<bool, 3> output_mask) {
  const char* op = "actattn.attention backward";
  const AttentionSpec spec = check_attention_call(op, q, k, v ACTATTN_ATTENTION_OPTIONS(ACTATTN_ARG)
      ACTATTN_ATTENTION_INPUTS(ACTATTN_ARG));
  check_backward_tensors(op, q, v, out, grad_out, "log_sum_exp", log_sum_exp, /*row_stat_read=*/spec.softmax());
  [[maybe_unused]] const auto device_guard = Backend::guard(q);
  const at::Tensor qw = Backend::input(q), kw = Backend::input(k), vw = Backend::input(v);
  const at::Tensor ow = Backend::input(out), gw = Backend::input(grad_out);
  const at::Tensor lse = spec.softmax() ? log_sum_exp.contiguous() : at::Tensor();
  QuadraticParams p = quadratic_params(spec, qw, kw, vw);
  const OptionalTensor lengths = as_key_lengths(key_lengths);
  p.key_lengths = key_lengths_data(lengths);
  p.dropout_seed = dropout_seed_data(spec, dropout_seed);

  // Only what output_mask asks for: dq in one kernel pass, dk and dv (together) in the other. With grouped
  // heads the kernels write dk, dv per query head; the groups are summed below.
  const auto& s = p.shape;
  const int64_t group = head_group(q, k);
  const bool want_q = output_mask[0], want_kv = output_mask[1] || output_mask[2];
  at::Tensor grad_q = want_q ? at::empty_like(qw, at::MemoryFormat::Contiguous) : at::Tensor();
  at::Tensor grad_k = want_kv ? at::empty({s.batch, s.heads, s.k_len, s.qk_dim}, kw.options()) : at::Tensor();
  at::Tensor grad_v = want_kv ? at::empty({s.batch, s.heads, s.k_len, s.v_dim}, vw.options()) : at::Tensor();
  p.q = row_view(qw);
  p.k = row_view(kw, group);
  p.v = row_view(vw, group);
  p.out = row_view(ow);
  // Only softmax reads the row statistics; the other activations get null pointers.
  const at::Tensor delta = spec.softmax() ? at::empty_like(lse) : at::Tensor();
  p.log_sum_exp.data = spec.softmax() ? lse.data_ptr() : nullptr;
  p.delta.data = spec.softmax() ? delta.data_ptr() : nullptr;
  p.grad_out = row_view(gw);
  if (want_q) p.grad_q = row_view(grad_q);
  if (want_kv) {
    p.grad_k = row_view(grad_k);
    p.grad_v = row_view(grad_v);
  }
  Backend::quadratic_backward(p);
  return {output_mask[0] ? grad_q.to(q.scalar_type()) : at::Tensor(),
          output_mask[1] ? sum_over_head_groups(grad_k, group).to(k.scalar_type()) : at::Tensor(),
          output_mask[2] ? sum_over_head_groups(grad_v, group).to(v.scalar_type()) : at::Tensor()};
}

template <typename Backend>
std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> linear_attention_forward(
    const at::Tensor& q, const at::Tensor& k, const at::Tensor& v ACTATTN_LINEAR_OPTIONS(ACTATTN_PARAM),
    const OptionalTensor& initial_state, const OptionalTensor& initial_normalizer, const OptionalTensor& key_lengths) {
  const char* op = "actattn.linear_attention";
  const LinearSpec spec = check_linear_call(op, q, k, v ACTATTN_LINEAR_OPTIONS(ACTATTN_ARG), initial_state,
                                            initial_normalizer, key_lengths);
  [[maybe_unused]] const auto device_guard = Backend::guard(q);
  const at::Tensor qw = Backend::input(q), kw = Backend::input(k), vw = Backend::input(v);
  const int64_t group = head_group(q, k);
  const OptionalTensor state0 = contiguous_or_none(state_per_query_head(initial_state, group));
  const OptionalTensor norm0 = contiguous_or_none(state_per_query_head(initial_normalizer, group));

  LinearParams p = linear_params(spec, qw, kw, vw);
  const OptionalTensor lengths = as_key_lengths(key_lengths);
  p.key_lengths = key_lengths_data(lengths);
  const auto& s = p.shape;
  at::Tensor out = at::empty({s.batch, s.heads, s.q_len, s.v_dim}, qw.options());
  at::Tensor final_state = at::empty({s.batch, s.heads, s.qk_dim, s.v_dim}, accumulation_options(qw));
  at::Tensor final_normalizer = at::empty({s.batch, s.heads, s.qk_dim}, accumulation_options(qw));
  at::Tensor denominator = at::empty(
      spec.normalize ? std::vector<int64_t>{s.batch, s.heads, s.q_len} : std::vector<int64_t>{0},
      accumulation_options(qw));
  p.q = row_view(qw);
  p.k = row_view(kw, group);
  p.v = row_view(vw, group);
  p.out = row_view(out);
  p.initial_state = optional_data(state0);
  p.initial_normalizer = optional_data(norm0);
  p.final_state = final_state.data_ptr();
  p.final_normalizer = final_normalizer.data_ptr();
  p.denominator.data = denominator.data_ptr();
  const at::Tensor workspace = Backend::linear_forward_workspace(p, accumulation_options(qw));
  p.workspace = workspace.defined() ? workspace.data_ptr() : nullptr;
  Backend::linear_forward(p);
  return {out.to(q.scalar_type()), state_per_kv_head(final_state, group), state_per_kv_head(final_normalizer, group),
          denominator};
}

template <typename Backend>
std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor> linear_attention_backward(
    const at::Tensor& grad_out, const OptionalTensor& grad_final_state, const OptionalTensor& grad_final_normalizer,
    const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, const at::Tensor& out,
    const at::Tensor& denominator ACTATTN_LINEAR_OPTIONS(ACTATTN_PARAM), const OptionalTensor& initial_state,
    const OptionalTensor& initial_normalizer, const OptionalTensor& key_lengths, std::array<bool, 3> output_mask,
    const OptionalTensor& saved_state, const OptionalTensor& saved_normalizer) {
  const char* op = "actattn.linear_attention backward";
  const LinearSpec spec = check_linear_call(op, q, k, v ACTATTN_LINEAR_OPTIONS(ACTATTN_ARG), initial_state,
                                            initial_normalizer, key_lengths);
  check_backward_tensors(op, q, v, out, grad_out, "denominator", denominator, /*row_stat_read=*/spec.normalize);
  check_final_state_grads(op, q, k, v, grad_final_state, grad_final_normalizer);
  check_saved_state(op, spec, q, k, v, saved_state, saved_normalizer);
  [[maybe_unused]] const auto device_guard = Backend::guard(q);
  const at::Tensor qw = Backend::input(q), kw = Backend::input(k), vw = Backend::input(v);
  const at::Tensor ow = Backend::input(out), gw = Backend::input(grad_out);
  const at::Tensor den = spec.normalize ? denominator.contiguous() : at::Tensor();
  const int64_t group = head_group(q, k);
  const OptionalTensor state0 = contiguous_or_none(state_per_query_head(initial_state, group));
  const OptionalTensor norm0 = contiguous_or_none(state_per_query_head(initial_normalizer, group));
  const OptionalTensor grad_state = contiguous_or_none(final_state_grad_per_query_head(grad_final_state, group));
  const OptionalTensor grad_norm = contiguous_or_none(final_state_grad_per_query_head(grad_final_normalizer, group));
  const OptionalTensor forward_state = contiguous_or_none(state_per_query_head(saved_state, group));
  const OptionalTensor forward_norm = contiguous_or_none(state_per_query_head(saved_normalizer, group));

  LinearParams p = linear_params(spec, qw, kw, vw);
  const OptionalTensor lengths = as_key_lengths(key_lengths);
  p.key_lengths = key_lengths_data(lengths);
  const auto& s = p.shape;
  at::Tensor grad_initial_state = at::empty({s.batch, s.heads, s.qk_dim, s.v_dim}, accumulation_options(qw));
  at::Tensor grad_initial_normalizer = at::empty({s.batch, s.heads, s.qk_dim}, accumulation_options(qw));
  // With grouped heads the kernels write dk, dv and the initial state's gradients per query head. dq,
  // and dk with dv (together), only when output_mask asks for them.
  const bool want_q = output_mask[0], want_kv = output_mask[1] || output_mask[2];
  at::Tensor grad_q = want_q ? at::empty_like(qw, at::MemoryFormat::Contiguous) : at::Tensor();
  at::Tensor grad_k = want_kv ? at::empty({s.batch, s.heads, s.k_len, s.qk_dim}, kw.options()) : at::Tensor();
  at::Tensor grad_v = want_kv ? at::empty({s.batch, s.heads, s.k_len, s.v_dim}, vw.options()) : at::Tensor();

  p.q = row_view(qw);
  p.k = row_view(kw, group);
  p.v = row_view(vw, group);
  p.out = row_view(ow);
  p.initial_state = optional_data(state0);
  p.initial_normalizer = optional_data(norm0);
  p.denominator.data = spec.normalize ? den.data_ptr() : nullptr;
  p.grad_out = row_view(gw);
  p.grad_final_state = optional_data(grad_state);
  p.grad_final_normalizer = optional_data(grad_norm);
  p.saved_state = optional_data(forward_state);
  p.saved_normalizer = optional_data(forward_norm);
  if (want_q) p.grad_q = row_view(grad_q);
  if (want_kv) {
    p.grad_k = row_view(grad_k);
    p.grad_v = row_view(grad_v);
  }
  p.grad_initial_state = grad_initial_state.data_ptr();
  p.grad_initial_normalizer = grad_initial_normalizer.data_ptr();
  const at::Tensor workspace = Backend::linear_backward_workspace(p, accumulation_options(qw));
  p.workspace = workspace.defined() ? workspace.data_ptr() : nullptr;
  Backend::linear_backward(p);
  return {output_mask[0] ? grad_q.to(q.scalar_type()) : at::Tensor(),
          output_mask[1] ? sum_over_head_groups(grad_k, group).to(k.scalar_type()) : at::Tensor(),
          output_mask[2] ? sum_over_head_groups(grad_v, group).to(v.scalar_type()) : at::Tensor(),
          sum_over_head_groups(grad_initial_state, group), sum_over_head_groups(grad_initial_normalizer, group)};
}

}  // namespace runners
}  // namespace actattn
