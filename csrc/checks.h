// Input validation shared by the CPU, CUDA and meta kernels, so every backend (and torch.compile's
// tracing) rejects the same inputs with the same message. Checks use symbolic sizes, so they also
// run on fake tensors with dynamic shapes.
#pragma once

#include <ATen/core/Tensor.h>
#include <c10/util/string_view.h>

#include <optional>

namespace actattn {

// q (B, H, Nq, Dk), k (B, H, Nk, Dk), v (B, H, Nk, Dv): ranks, dtypes, devices, matching sizes.
void check_qkv(const char* op, const at::Tensor& q, const at::Tensor& k, const at::Tensor& v);

// Scalar options of quadratic attention (finite, positive divisor, no bias/divisor with softmax).
void check_score_options(c10::string_view activation, std::optional<double> scale, std::optional<double> bias,
                         std::optional<double> divisor);

// Options and optional initial state of linear attention.
void check_linear_options(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                          c10::string_view feature_map, bool causal, double eps, std::optional<double> scale,
                          const std::optional<at::Tensor>& initial_state,
                          const std::optional<at::Tensor>& initial_normalizer);

// Optional (batch,) integer key lengths on q's device.
void check_key_lengths(const std::optional<at::Tensor>& key_lengths, const at::Tensor& q);

// Optional gradients of linear attention's final state: shape, accumulation dtype and device of the state.
void check_final_state_grads(const char* op, const at::Tensor& q, const at::Tensor& v,
                             const std::optional<at::Tensor>& grad_final_state,
                             const std::optional<at::Tensor>& grad_final_normalizer);

// The tensors a backward op reads besides q, k, v (whose checks come first): out and grad_out of shape
// (B, H, Nq, Dv) in q's dtype on q's device, and the forward's row statistic (log-sum-exp for softmax,
// denominators for normalised linear attention) of shape (B, H, Nq) in the accumulation dtype. A row
// statistic the backward does not read may be anything (the forward returns it empty).
void check_backward_tensors(const char* op, const at::Tensor& q, const at::Tensor& v, const at::Tensor& out,
                            const at::Tensor& grad_out, const char* row_stat_name, const at::Tensor& row_stat,
                            bool row_stat_read);

}  // namespace actattn
