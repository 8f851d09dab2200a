// Autograd for the public ops, in C++ so that gradients work from LibTorch as well as Python.
// attention / linear_attention run the underscored forward op below the autograd key and save what
// the backward op needs: q, k, v, the output and one O(N) row statistic (log-sum-exp for softmax,
// the denominators for normalised linear attention). Backward ops are not themselves differentiable:
// asking for a double backward raises instead of returning a silently wrong gradient.
#include <torch/autograd.h>
#include <torch/csrc/autograd/autograd_not_implemented_fallback.h>
#include <torch/library.h>

#include "ops.h"

namespace actattn {
namespace {

using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

std::optional<at::Tensor> defined_or_none(const at::Tensor& t) {
  if (t.defined()) return t;
  return std::nullopt;
}

class AttentionFunction : public torch::autograd::Function<AttentionFunction> {
 public:
  static at::Tensor forward(AutogradContext* ctx, const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                            c10::string_view activation, bool causal, std::optional<double> scale,
                            std::optional<double> bias, std::optional<double> divisor,
                            const OptionalTensor& key_lengths) {
    at::AutoDispatchBelowADInplaceOrView guard;
    auto [out, log_sum_exp] = ops::attention_forward(q, k, v, activation, causal, scale, bias, divisor, key_lengths);
    ctx->save_for_backward({q, k, v, out, log_sum_exp, key_lengths.value_or(at::Tensor())});
    ctx->saved_data["activation"] = std::string(activation);
    ctx->saved_data["causal"] = causal;
    ctx->saved_data["scale"] = scale;
    ctx->saved_data["bias"] = bias;
    ctx->saved_data["divisor"] = divisor;
    return out;
  }

  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    const variable_list saved = ctx->get_saved_variables();
    const std::string activation = ctx->saved_data["activation"].toStringRef();
    auto [grad_q, grad_k, grad_v] = ops::attention_backward(
        grads[0], saved[0], saved[1], saved[2], saved[3], saved[4], activation, ctx->saved_data["causal"].toBool(),
        ctx->saved_data["scale"].toOptional<double>(), ctx->saved_data["bias"].toOptional<double>(),
        ctx->saved_data["divisor"].toOptional<double>(), defined_or_none(saved[5]));
    return {grad_q,       grad_k,       grad_v,       at::Tensor(), at::Tensor(),
            at::Tensor(), at::Tensor(), at::Tensor(), at::Tensor()};
  }
};

class LinearAttentionFunction : public torch::autograd::Function<LinearAttentionFunction> {
 public:
  static variable_list forward(AutogradContext* ctx, const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                               c10::string_view feature_map, bool causal, bool normalize, double eps,
                               std::optional<double> scale, const OptionalTensor& initial_state,
                               const OptionalTensor& initial_normalizer, const OptionalTensor& key_lengths) {
    at::AutoDispatchBelowADInplaceOrView guard;
    auto [out, final_state, final_normalizer, denominator] = ops::linear_attention_forward(
        q, k, v, feature_map, causal, normalize, eps, scale, initial_state, initial_normalizer, key_lengths);
    ctx->save_for_backward({q, k, v, out, denominator, initial_state.value_or(at::Tensor()),
                            initial_normalizer.value_or(at::Tensor()), key_lengths.value_or(at::Tensor())});
    ctx->saved_data["feature_map"] = std::string(feature_map);
    ctx->saved_data["causal"] = causal;
    ctx->saved_data["normalize"] = normalize;
    ctx->saved_data["eps"] = eps;
    ctx->saved_data["scale"] = scale;
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
        grad_out, defined_or_none(grads[1]), defined_or_none(grads[2]), saved[0], saved[1], saved[2], out, saved[4],
        ctx->saved_data["feature_map"].toStringRef(), ctx->saved_data["causal"].toBool(),
        ctx->saved_data["normalize"].toBool(), ctx->saved_data["eps"].toDouble(),
        ctx->saved_data["scale"].toOptional<double>(), initial_state, initial_normalizer, defined_or_none(saved[7]));
    return {grad_q,       grad_k,       grad_v,       at::Tensor(),
            at::Tensor(), at::Tensor(), at::Tensor(), at::Tensor(),
            initial_state ? grad_state : at::Tensor(), initial_normalizer ? grad_normalizer : at::Tensor(),
            at::Tensor()};
  }
};

at::Tensor attention_autograd(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                              c10::string_view activation, bool causal, std::optional<double> scale,
                              std::optional<double> bias, std::optional<double> divisor,
                              const OptionalTensor& key_lengths) {
  return AttentionFunction::apply(q, k, v, activation, causal, scale, bias, divisor, key_lengths);
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> linear_attention_autograd(
    const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, c10::string_view feature_map, bool causal,
    bool normalize, double eps, std::optional<double> scale, const OptionalTensor& initial_state,
    const OptionalTensor& initial_normalizer, const OptionalTensor& key_lengths) {
  const variable_list outputs = LinearAttentionFunction::apply(q, k, v, feature_map, causal, normalize, eps, scale,
                                                               initial_state, initial_normalizer, key_lengths);
  return {outputs[0], outputs[1], outputs[2]};
}

// Below the autograd key (inference, tracing with no grad) the public ops are their forward op.
at::Tensor attention_composite(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                               c10::string_view activation, bool causal, std::optional<double> scale,
                               std::optional<double> bias, std::optional<double> divisor,
                               const OptionalTensor& key_lengths) {
  return std::get<0>(ops::attention_forward(q, k, v, activation, causal, scale, bias, divisor, key_lengths));
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> linear_attention_composite(
    const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, c10::string_view feature_map, bool causal,
    bool normalize, double eps, std::optional<double> scale, const OptionalTensor& initial_state,
    const OptionalTensor& initial_normalizer, const OptionalTensor& key_lengths) {
  auto [out, final_state, final_normalizer, denominator] = ops::linear_attention_forward(
      q, k, v, feature_map, causal, normalize, eps, scale, initial_state, initial_normalizer, key_lengths);
  return {out, final_state, final_normalizer};
}

}  // namespace

TORCH_LIBRARY_IMPL(actattn, Autograd, m) {
  m.impl("attention", &attention_autograd);
  m.impl("linear_attention", &linear_attention_autograd);
  m.impl("_attention_forward", torch::autograd::autogradNotImplementedFallback());
  m.impl("_attention_backward", torch::autograd::autogradNotImplementedFallback());
  m.impl("_linear_attention_forward", torch::autograd::autogradNotImplementedFallback());
  m.impl("_linear_attention_backward", torch::autograd::autogradNotImplementedFallback());
}

TORCH_LIBRARY_IMPL(actattn, CompositeExplicitAutograd, m) {
  m.impl("attention", &attention_composite);
  m.impl("linear_attention", &linear_attention_composite);
}

}  // namespace actattn
