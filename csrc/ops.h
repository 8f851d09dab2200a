// C++ signatures of actattn's operators and typed calls through the dispatcher. Kernels for each
// backend implement these signatures; callers (autograd, the C++ API) go through the dispatcher so
// that device dispatch, tracing and fake tensors work for them as for any torch op.
#pragma once

#include <ATen/core/Tensor.h>
#include <c10/util/string_view.h>

#include <optional>
#include <tuple>

namespace actattn {

using OptionalTensor = std::optional<at::Tensor>;

// Returns (out, log_sum_exp); log_sum_exp is (B, H, Nq) for softmax and empty otherwise.
using AttentionForwardFn = std::tuple<at::Tensor, at::Tensor>(const at::Tensor& q, const at::Tensor& k,
                                                              const at::Tensor& v, c10::string_view activation,
                                                              bool causal, std::optional<double> scale,
                                                              std::optional<double> bias,
                                                              std::optional<double> divisor,
                                                              const OptionalTensor& key_lengths);

// Returns (grad_q, grad_k, grad_v).
using AttentionBackwardFn = std::tuple<at::Tensor, at::Tensor, at::Tensor>(
    const at::Tensor& grad_out, const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, const at::Tensor& out,
    const at::Tensor& log_sum_exp, c10::string_view activation, bool causal, std::optional<double> scale,
    std::optional<double> bias, std::optional<double> divisor, const OptionalTensor& key_lengths);

// Returns (out, final_state, final_normalizer, denominator); denominator is (B, H, Nq) when normalize
// and empty otherwise.
using LinearForwardFn = std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor>(
    const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, c10::string_view feature_map, bool causal,
    bool normalize, double eps, std::optional<double> scale, const OptionalTensor& initial_state,
    const OptionalTensor& initial_normalizer, const OptionalTensor& key_lengths);

// Returns (grad_q, grad_k, grad_v, grad_initial_state, grad_initial_normalizer).
using LinearBackwardFn = std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor>(
    const at::Tensor& grad_out, const OptionalTensor& grad_final_state, const OptionalTensor& grad_final_normalizer,
    const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, const at::Tensor& out,
    const at::Tensor& denominator, c10::string_view feature_map, bool causal, bool normalize, double eps,
    std::optional<double> scale, const OptionalTensor& initial_state, const OptionalTensor& initial_normalizer,
    const OptionalTensor& key_lengths);

namespace ops {
// Calls through the dispatcher (actattn::_attention_forward, ...).
AttentionForwardFn attention_forward;
AttentionBackwardFn attention_backward;
LinearForwardFn linear_attention_forward;
LinearBackwardFn linear_attention_backward;
}  // namespace ops

}  // namespace actattn
