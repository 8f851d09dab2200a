#include "ops.h"

#include <ATen/core/dispatch/Dispatcher.h>

namespace actattn {
namespace ops {
namespace {

template <typename Fn>
c10::TypedOperatorHandle<Fn> find_op(const char* name) {
  return c10::Dispatcher::singleton().findSchemaOrThrow(name, "").typed<Fn>();
}

}  // namespace

std::tuple<at::Tensor, at::Tensor> attention_forward(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                                                     c10::string_view activation, bool causal,
                                                     std::optional<double> scale, std::optional<double> bias,
                                                     std::optional<double> divisor, const OptionalTensor& key_lengths) {
  static const auto op = find_op<AttentionForwardFn>("actattn::_attention_forward");
  return op.call(q, k, v, activation, causal, scale, bias, divisor, key_lengths);
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> attention_backward(
    const at::Tensor& grad_out, const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, const at::Tensor& out,
    const at::Tensor& log_sum_exp, c10::string_view activation, bool causal, std::optional<double> scale,
    std::optional<double> bias, std::optional<double> divisor, const OptionalTensor& key_lengths) {
  static const auto op = find_op<AttentionBackwardFn>("actattn::_attention_backward");
  return op.call(grad_out, q, k, v, out, log_sum_exp, activation, causal, scale, bias, divisor, key_lengths);
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> linear_attention_forward(
    const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, c10::string_view feature_map, bool causal,
    bool normalize, double eps, std::optional<double> scale, const OptionalTensor& initial_state,
    const OptionalTensor& initial_normalizer, const OptionalTensor& key_lengths) {
  static const auto op = find_op<LinearForwardFn>("actattn::_linear_attention_forward");
  return op.call(q, k, v, feature_map, causal, normalize, eps, scale, initial_state, initial_normalizer, key_lengths);
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor> linear_attention_backward(
    const at::Tensor& grad_out, const OptionalTensor& grad_final_state, const OptionalTensor& grad_final_normalizer,
    const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, const at::Tensor& out,
    const at::Tensor& denominator, c10::string_view feature_map, bool causal, bool normalize, double eps,
    std::optional<double> scale, const OptionalTensor& initial_state, const OptionalTensor& initial_normalizer,
    const OptionalTensor& key_lengths) {
  static const auto op = find_op<LinearBackwardFn>("actattn::_linear_attention_backward");
  return op.call(grad_out, grad_final_state, grad_final_normalizer, q, k, v, out, denominator, feature_map, causal,
                 normalize, eps, scale, initial_state, initial_normalizer, key_lengths);
}

}  // namespace ops
}  // namespace actattn
