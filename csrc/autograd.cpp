// Autograd for the public ops, in C++ so that gradients work from LibTorch as well as Python.
// attention / linear_attention run the underscored forward op below the autograd key and save what
// the backward op needs: q, k, v, the output and one O(N) row statistic (log-sum-exp for softmax,
// the denominators for normalised linear attention), the optional inputs (key lengths; dropout's seed,
// from which the backward regenerates the forward's mask), and the raw scalar options, which the
// backward op parses again as every op does. Backward ops are not themselves differentiable: asking for a double
// backward raises instead of returning a silently wrong gradient.
#include <torch/autograd.h>
#include <torch/csrc/autograd/autograd_not_implemented_fallback.h>
#include <torch/library.h>

#include <type_traits>

#include "ops.h"

// Statements saving each option in ctx->saved_data under its name, and the arguments restoring them.
#define ACTATTN_SAVE_OPTION(type, name, schema_type, schema_default) ctx->saved_data[#name] = to_saved(name);
#define ACTATTN_SAVED_OPTION(type, name, schema_type, schema_default) \
  , from_saved<std::decay_t<type>>(ctx->saved_data[#name])
#define ACTATTN_COUNT_OPTION(type, name, schema_type, schema_default) +1

namespace actattn {
namespace {

using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

constexpr size_t kAttentionOptionCount = 0 ACTATTN_ATTENTION_OPTIONS(ACTATTN_COUNT_OPTION);
constexpr size_t kAttentionInputCount = 0 ACTATTN_ATTENTION_INPUTS(ACTATTN_COUNT_OPTION);
constexpr size_t kLinearOptionCount = 0 ACTATTN_LINEAR_OPTIONS(ACTATTN_COUNT_OPTION);

// The IValue keeps a copy of a string option: the view passed to forward does not outlive it.
c10::IValue to_saved(c10::string_view value) { return std::string(value); }
template <typename T>
c10::IValue to_saved(const T& value) {
  return c10::IValue(value);
}

template <typename T>
T from_saved(const c10::IValue& value);
template <>
c10::string_view from_saved<c10::string_view>(const c10::IValue& value) {
  return value.toStringRef();
}
template <>
bool from_saved<bool>(const c10::IValue& value) {
  return value.toBool();
}
template <>
double from_saved<double>(const c10::IValue& value) {
  return value.toDouble();
}
template <>
int64_t from_saved<int64_t>(const c10::IValue& value) {
  return value.toInt();
}
template <>
std::optional<double> from_saved<std::optional<double>>(const c10::IValue& value) {
  return value.toOptional<double>();
}

std::optional<at::Tensor> defined_or_none(const at::Tensor& t) {
  if (t.defined()) return t;
  return std::nullopt;
}

// Gradients for the leading tensors, then none for each scalar option and each trailing input.
variable_list with_no_grads(variable_list grads, size_t count) {
  grads.resize(grads.size() + count);
  return grads;
}

// Returns (out, log_sum_exp); the log-sum-exp is returned for merging attention over key blocks and
// carries no gradient (as FlashAttention's).
class AttentionFunction : public torch::autograd::Function<AttentionFunction> {
 public:
  static variable_list forward(AutogradContext* ctx, const at::Tensor& q, const at::Tensor& k,
                               const at::Tensor& v ACTATTN_ATTENTION_OPTIONS(ACTATTN_PARAM)
                                   ACTATTN_ATTENTION_INPUTS(ACTATTN_PARAM)) {
    at::AutoDispatchBelowADInplaceOrView guard;
    auto [out, log_sum_exp] = ops::attention_forward(q, k, v ACTATTN_ATTENTION_OPTIONS(ACTATTN_ARG)
        ACTATTN_ATTENTION_INPUTS(ACTATTN_ARG));
    ctx->save_for_backward(
        {q, k, v, out, log_sum_exp, key_lengths.value_or(at::Tensor()), dropout_seed.value_or(at::Tensor())});
    ACTATTN_ATTENTION_OPTIONS(ACTATTN_SAVE_OPTION)
    ctx->mark_non_differentiable({log_sum_exp});
    return {out, log_sum_exp};
  }

  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    const variable_list saved = ctx->get_saved_variables();
    auto [grad_q, grad_k, grad_v] =
        ops::attention_backward(grads[0], saved[0], saved[1], saved[2], saved[3],
                                saved[4] ACTATTN_ATTENTION_OPTIONS(ACTATTN_SAVED_OPTION), defined_or_none(saved[5]),
                                defined_or_none(saved[6]),
                                {ctx->needs_input_grad(0), ctx->needs_input_grad(1), ctx->needs_input_grad(2)});
    return with_no_grads({grad_q, grad_k, grad_v}, kAttentionOptionCount + kAttentionInputCount);
  }
};

class LinearAttentionFunction : public torch::autograd::Function<LinearAttentionFunction> {
 public:
  static variable_list forward(AutogradContext* ctx, const at::Tensor& q, const at::Tensor& k,
                               const at::Tensor& v ACTATTN_LINEAR_OPTIONS(ACTATTN_PARAM),
                               const OptionalTensor& initial_state, const OptionalTensor& initial_normalizer,
                               const OptionalTensor& key_lengths) {
    at::AutoDispatchBelowADInplaceOrView guard;
    auto [out, final_state, final_normalizer, denominator] = ops::linear_attention_forward(
        q, k, v ACTATTN_LINEAR_OPTIONS(ACTATTN_ARG), initial_state, initial_normalizer, key_lengths);
    // A non-causal call's final state is its state over all keys, which the backward would otherwise
    // rebuild (one of its five chunk products); saving it costs B * H * Dk * (Dv + 1) numbers.
    const bool save_state = !causal;
    ctx->save_for_backward({q, k, v, out, denominator, initial_state.value_or(at::Tensor()),
                            initial_normalizer.value_or(at::Tensor()), key_lengths.value_or(at::Tensor()),
                            save_state ? final_state : at::Tensor(), save_state ? final_normalizer : at::Tensor()});
    ACTATTN_LINEAR_OPTIONS(ACTATTN_SAVE_OPTION)
    // Unused outputs (often the final state) get no zero-filled gradient; backward treats them as zero.
    ctx->set_materialize_grads(false);
    return {out, final_state, final_normalizer};
  }

  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    const variable_list saved = ctx->get_saved_variables();
    const at::Tensor& out = saved[3];
    const at::Tensor grad_out = grads[0].defined() ? grads[0] : at::zeros_like(out);
    const OptionalTensor initial_state = defined_or_none(saved[5]);
    const OptionalTensor initial_normalizer = defined_or_none(saved[6]);
    auto [grad_q, grad_k, grad_v, grad_state, grad_normalizer] = ops::linear_attention_backward(
        grad_out, defined_or_none(grads[1]), defined_or_none(grads[2]), saved[0], saved[1], saved[2], out,
        saved[4] ACTATTN_LINEAR_OPTIONS(ACTATTN_SAVED_OPTION), initial_state, initial_normalizer,
        defined_or_none(saved[7]), {ctx->needs_input_grad(0), ctx->needs_input_grad(1), ctx->needs_input_grad(2)},
        defined_or_none(saved[8]), defined_or_none(saved[9]));
    variable_list result = with_no_grads({grad_q, grad_k, grad_v}, kLinearOptionCount);
    result.push_back(initial_state ? grad_state : at::Tensor());
    result.push_back(initial_normalizer ? grad_normalizer : at::Tensor());
    result.emplace_back();  // key_lengths
    return result;
  }
};

at::Tensor attention_autograd(const at::Tensor& q, const at::Tensor& k,
                              const at::Tensor& v ACTATTN_ATTENTION_OPTIONS(ACTATTN_PARAM)
                                  ACTATTN_ATTENTION_INPUTS(ACTATTN_PARAM)) {
  return AttentionFunction::apply(q, k, v ACTATTN_ATTENTION_OPTIONS(ACTATTN_ARG)
      ACTATTN_ATTENTION_INPUTS(ACTATTN_ARG))[0];
}

std::tuple<at::Tensor, at::Tensor> attention_with_lse_autograd(
    const at::Tensor& q, const at::Tensor& k, const at::Tensor& v ACTATTN_ATTENTION_OPTIONS(ACTATTN_PARAM)
        ACTATTN_ATTENTION_INPUTS(ACTATTN_PARAM)) {
  const variable_list outputs = AttentionFunction::apply(q, k, v ACTATTN_ATTENTION_OPTIONS(ACTATTN_ARG)
      ACTATTN_ATTENTION_INPUTS(ACTATTN_ARG));
  return {outputs[0], outputs[1]};
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> linear_attention_autograd(
    const at::Tensor& q, const at::Tensor& k, const at::Tensor& v ACTATTN_LINEAR_OPTIONS(ACTATTN_PARAM),
    const OptionalTensor& initial_state, const OptionalTensor& initial_normalizer, const OptionalTensor& key_lengths) {
  const variable_list outputs = LinearAttentionFunction::apply(q, k, v ACTATTN_LINEAR_OPTIONS(ACTATTN_ARG),
                                                               initial_state, initial_normalizer, key_lengths);
  return {outputs[0], outputs[1], outputs[2]};
}

// Below the autograd key (inference, tracing with no grad) the public ops are their forward op.
at::Tensor attention_composite(const at::Tensor& q, const at::Tensor& k,
                               const at::Tensor& v ACTATTN_ATTENTION_OPTIONS(ACTATTN_PARAM)
                                   ACTATTN_ATTENTION_INPUTS(ACTATTN_PARAM)) {
  return std::get<0>(ops::attention_forward(q, k, v ACTATTN_ATTENTION_OPTIONS(ACTATTN_ARG)
      ACTATTN_ATTENTION_INPUTS(ACTATTN_ARG)));
}

std::tuple<at::Tensor, at::Tensor> attention_with_lse_composite(
    const at::Tensor& q, const at::Tensor& k, const at::Tensor& v ACTATTN_ATTENTION_OPTIONS(ACTATTN_PARAM)
        ACTATTN_ATTENTION_INPUTS(ACTATTN_PARAM)) {
  return ops::attention_forward(q, k, v ACTATTN_ATTENTION_OPTIONS(ACTATTN_ARG) ACTATTN_ATTENTION_INPUTS(ACTATTN_ARG));
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> linear_attention_composite(
    const at::Tensor& q, const at::Tensor& k, const at::Tensor& v ACTATTN_LINEAR_OPTIONS(ACTATTN_PARAM),
    const OptionalTensor& initial_state, const OptionalTensor& initial_normalizer, const OptionalTensor& key_lengths) {
  auto [out, final_state, final_normalizer, denominator] = ops::linear_attention_forward(
      q, k, v ACTATTN_LINEAR_OPTIONS(ACTATTN_ARG), initial_state, initial_normalizer, key_lengths);
  return {out, final_state, final_normalizer};
}

}  // namespace

TORCH_LIBRARY_IMPL(actattn, Autograd, m) {
  m.impl("attention", &attention_autograd);
  m.impl("attention_with_lse", &attention_with_lse_autograd);
  m.impl("linear_attention", &linear_attention_autograd);
  m.impl("_attention_forward", torch::autograd::autogradNotImplementedFallback());
  m.impl("_attention_backward", torch::autograd::autogradNotImplementedFallback());
  m.impl("_linear_attention_forward", torch::autograd::autogradNotImplementedFallback());
  m.impl("_linear_attention_backward", torch::autograd::autogradNotImplementedFallback());
}

TORCH_LIBRARY_IMPL(actattn, CompositeExplicitAutograd, m) {
  m.impl("attention", &attention_composite);
  m.impl("attention_with_lse", &attention_with_lse_composite);
  m.impl("linear_attention", &linear_attention_composite);
}

}  // namespace actattn
