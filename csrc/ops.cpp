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

at::Tensor attention(const at::Tensor& q, const at::Tensor& k,
                     const at::Tensor& v ACTATTN_ATTENTION_OPTIONS(ACTATTN_PARAM)
                         ACTATTN_ATTENTION_INPUTS(ACTATTN_PARAM)) {
  static const auto op = find_op<AttentionFn>("actattn::attention");
  return op.call(q, k, v ACTATTN_ATTENTION_OPTIONS(ACTATTN_ARG) ACTATTN_ATTENTION_INPUTS(ACTATTN_ARG));
}

std::tuple<at::Tensor, at::Tensor> attention_with_lse(const at::Tensor& q, const at::Tensor& k,
                                                      const at::Tensor& v ACTATTN_ATTENTION_OPTIONS(ACTATTN_PARAM)
                                                          ACTATTN_ATTENTION_INPUTS(ACTATTN_PARAM)) {
  static const auto op = find_op<AttentionForwardFn>("actattn::attention_with_lse");
  return op.call(q, k, v ACTATTN_ATTENTION_OPTIONS(ACTATTN_ARG) ACTATTN_ATTENTION_INPUTS(ACTATTN_ARG));
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> linear_attention(
    const at::Tensor& q, const at::Tensor& k, const at::Tensor& v ACTATTN_LINEAR_OPTIONS(ACTATTN_PARAM),
    const OptionalTensor& initial_state, const OptionalTensor& initial_normalizer, const OptionalTensor& key_lengths) {
  static const auto op = find_op<LinearAttentionFn>("actattn::linear_attention");
  return op.call(q, k, v ACTATTN_LINEAR_OPTIONS(ACTATTN_ARG), initial_state, initial_normalizer, key_lengths);
}

std::tuple<at::Tensor, at::Tensor> attention_forward(const at::Tensor& q, const at::Tensor& k,
                                                     const at::Tensor& v ACTATTN_ATTENTION_OPTIONS(ACTATTN_PARAM)
                                                         ACTATTN_ATTENTION_INPUTS(ACTATTN_PARAM)) {
  static const auto op = find_op<AttentionForwardFn>("actattn::_attention_forward");
  return op.call(q, k, v ACTATTN_ATTENTION_OPTIONS(ACTATTN_ARG) ACTATTN_ATTENTION_INPUTS(ACTATTN_ARG));
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> attention_backward(
    const at::Tensor& grad_out, const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, const at::Tensor& out,
    const at::Tensor& log_sum_exp ACTATTN_ATTENTION_OPTIONS(ACTATTN_PARAM) ACTATTN_ATTENTION_INPUTS(ACTATTN_PARAM),
    std::array<bool, 3> output_mask) {
  static const auto op = find_op<AttentionBackwardFn>("actattn::_attention_backward");
  return op.call(grad_out, q, k, v, out, log_sum_exp ACTATTN_ATTENTION_OPTIONS(ACTATTN_ARG)
      ACTATTN_ATTENTION_INPUTS(ACTATTN_ARG),
                 output_mask);
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> linear_attention_forward(
    const at::Tensor& q, const at::Tensor& k, const at::Tensor& v ACTATTN_LINEAR_OPTIONS(ACTATTN_PARAM),
    const OptionalTensor& initial_state, const OptionalTensor& initial_normalizer, const OptionalTensor& key_lengths) {
  static const auto op = find_op<LinearForwardFn>("actattn::_linear_attention_forward");
  return op.call(q, k, v ACTATTN_LINEAR_OPTIONS(ACTATTN_ARG), initial_state, initial_normalizer, key_lengths);
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor> linear_attention_backward(
    const at::Tensor& grad_out, const OptionalTensor& grad_final_state, const OptionalTensor& grad_final_normalizer,
    const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, const at::Tensor& out,
    const at::Tensor& denominator ACTATTN_LINEAR_OPTIONS(ACTATTN_PARAM), const OptionalTensor& initial_state,
    const OptionalTensor& initial_normalizer, const OptionalTensor& key_lengths, std::array<bool, 3> output_mask,
    const OptionalTensor& saved_state, const OptionalTensor& saved_normalizer) {
  static const auto op = find_op<LinearBackwardFn>("actattn::_linear_attention_backward");
  return op.call(grad_out, grad_final_state, grad_final_normalizer, q, k, v, out,
                 denominator ACTATTN_LINEAR_OPTIONS(ACTATTN_ARG), initial_state, initial_normalizer, key_lengths,
                 output_mask, saved_state, saved_normalizer);
}

}  // namespace ops
}  // namespace actattn
