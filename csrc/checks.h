// Input validation shared by the CPU, CUDA and meta kernels, so every backend (and torch.compile's
// tracing) rejects the same inputs with the same message. Checks use symbolic sizes, so they also
// run on fake tensors with dynamic shapes.
#pragma once

#include <ATen/core/Tensor.h>
#include <c10/util/string_view.h>

#include <optional>

#include "op_options.h"

namespace actattn {

// Every check of a call that needs no backward tensor, in the order the runners and the meta kernels
// share: q, k, v, then the scalar options (parsed once: the returned spec), then the optional tensors.
AttentionSpec check_attention_call(const char* op, const at::Tensor& q, const at::Tensor& k,
                                   const at::Tensor& v ACTATTN_ATTENTION_OPTIONS(ACTATTN_PARAM)
                                       ACTATTN_ATTENTION_INPUTS(ACTATTN_PARAM));
LinearSpec check_linear_call(const char* op, const at::Tensor& q, const at::Tensor& k,
                             const at::Tensor& v ACTATTN_LINEAR_OPTIONS(ACTATTN_PARAM),
                             const std::optional<at::Tensor>& initial_state,
                             const std::optional<at::Tensor>& initial_normalizer,
                             const std::optional<at::Tensor>& key_lengths);

// q (B, H, Nq, Dk), k (B, Hkv, Nk, Dk), v (B, Hkv, Nk, Dv): ranks, dtypes, devices, matching sizes;
// Hkv divides H (grouped-query attention when Hkv < H).
void check_qkv(const char* op, const at::Tensor& q, const at::Tensor& k, const at::Tensor& v);

// Linear attention's needs of q, k, v and its optional initial state: causal needs Nq == Nk, a state
// needs causal and both halves, each half of shape (B, Hkv, Dk, Dv) / (B, Hkv, Dk) in the accumulation
// dtype (one state per key/value head).
void check_linear_state(const char* op, const LinearSpec& spec, const at::Tensor& q, const at::Tensor& k,
                        const at::Tensor& v, const std::optional<at::Tensor>& initial_state,
                        const std::optional<at::Tensor>& initial_normalizer);

// Optional (batch,) integer key lengths on q's device.
void check_key_lengths(const std::optional<at::Tensor>& key_lengths, const at::Tensor& q);

// The seed of a call with dropout: required when dropout_p > 0, (1,) int64 on q's device.
void check_dropout_seed(const char* op, const AttentionSpec& spec, const std::optional<at::Tensor>& dropout_seed,
                        const at::Tensor& q);

// Optional gradients of linear attention's final state: shape, accumulation dtype and device of the state.
void check_final_state_grads(const char* op, const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                             const std::optional<at::Tensor>& grad_final_state,
                             const std::optional<at::Tensor>& grad_final_normalizer);

// The non-causal forward's final state, which the linear backward may take instead of rebuilding it from
// the keys: both halves or neither, only when not causal, shaped and typed like the state.
void check_saved_state(const char* op, const LinearSpec& spec, const at::Tensor& q, const at::Tensor& k,
                       const at::Tensor& v, const std::optional<at::Tensor>& saved_state,
                       const std::optional<at::Tensor>& saved_normalizer);

// The tensors a backward op reads besides q, k, v (whose checks come first): out and grad_out of shape
// (B, H, Nq, Dv) in q's dtype on q's device, and the forward's row statistic (log-sum-exp for softmax,
// denominators for normalised linear attention) of shape (B, H, Nq) in the accumulation dtype. A row
// statistic the backward does not read may be anything (the forward returns it empty).
void check_backward_tensors(const char* op, const at::Tensor& q, const at::Tensor& v, const at::Tensor& out,
                            const at::Tensor& grad_out, const char* row_stat_name, const at::Tensor& row_stat,
                            bool row_stat_read);

}  // namespace actattn
