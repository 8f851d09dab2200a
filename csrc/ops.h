// C++ signatures of actattn's operators and typed calls through the dispatcher. Kernels for each
// backend implement these signatures; callers (autograd, the C++ API) go through the dispatcher so
// that device dispatch, tracing and fake tensors work for them as for any torch op. The scalar options
// come from the lists in op_options.h, in schema order.
#pragma once

#include <ATen/core/Tensor.h>

#include <array>
#include <tuple>

#include "op_options.h"

namespace actattn {

// Returns (out, log_sum_exp); log_sum_exp is (B, H, Nq) for softmax and empty otherwise. Also the type
// of the public attention_with_lse.
using AttentionForwardFn = std::tuple<at::Tensor, at::Tensor>(
    const at::Tensor& q, const at::Tensor& k, const at::Tensor& v ACTATTN_ATTENTION_OPTIONS(ACTATTN_PARAM)
        ACTATTN_ATTENTION_INPUTS(ACTATTN_PARAM));

// Returns (grad_q, grad_k, grad_v); output_mask says which are wanted (as aten's backward ops), the
// others are undefined and not computed.
using AttentionBackwardFn = std::tuple<at::Tensor, at::Tensor, at::Tensor>(
    const at::Tensor& grad_out, const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, const at::Tensor& out,
    const at::Tensor& log_sum_exp ACTATTN_ATTENTION_OPTIONS(ACTATTN_PARAM) ACTATTN_ATTENTION_INPUTS(ACTATTN_PARAM),
    std::array<bool, 3> output_mask);

// Returns (out, final_state, final_normalizer, denominator); denominator is (B, H, Nq) when normalize
// and empty otherwise.
using LinearForwardFn = std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor>(
    const at::Tensor& q, const at::Tensor& k, const at::Tensor& v ACTATTN_LINEAR_OPTIONS(ACTATTN_PARAM),
    const OptionalTensor& initial_state, const OptionalTensor& initial_normalizer, const OptionalTensor& key_lengths);

// Returns (grad_q, grad_k, grad_v, grad_initial_state, grad_initial_normalizer); output_mask says which of
// grad_q, grad_k, grad_v are wanted (the others are undefined), the state gradients are always returned.
// saved_state and saved_normalizer (non-causal only, optional): the forward's final state, which the CPU
// kernel then reads instead of rebuilding it from the keys (autograd passes them).
using LinearBackwardFn = std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor>(
    const at::Tensor& grad_out, const OptionalTensor& grad_final_state, const OptionalTensor& grad_final_normalizer,
    const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, const at::Tensor& out,
    const at::Tensor& denominator ACTATTN_LINEAR_OPTIONS(ACTATTN_PARAM), const OptionalTensor& initial_state,
    const OptionalTensor& initial_normalizer, const OptionalTensor& key_lengths, std::array<bool, 3> output_mask,
    const OptionalTensor& saved_state, const OptionalTensor& saved_normalizer);

// The public (differentiable) ops.
using AttentionFn = at::Tensor(const at::Tensor& q, const at::Tensor& k,
                               const at::Tensor& v ACTATTN_ATTENTION_OPTIONS(ACTATTN_PARAM)
                                   ACTATTN_ATTENTION_INPUTS(ACTATTN_PARAM));
using LinearAttentionFn = std::tuple<at::Tensor, at::Tensor, at::Tensor>(
    const at::Tensor& q, const at::Tensor& k, const at::Tensor& v ACTATTN_LINEAR_OPTIONS(ACTATTN_PARAM),
    const OptionalTensor& initial_state, const OptionalTensor& initial_normalizer, const OptionalTensor& key_lengths);

namespace ops {
// Calls through the dispatcher (actattn::attention, actattn::_attention_forward, ...).
AttentionFn attention;
AttentionForwardFn attention_with_lse;
LinearAttentionFn linear_attention;
AttentionForwardFn attention_forward;
AttentionBackwardFn attention_backward;
LinearForwardFn linear_attention_forward;
LinearBackwardFn linear_attention_backward;
}  // namespace ops

}  // namespace actattn
