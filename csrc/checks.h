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

// A gradient that must have the shape, dtype and device of the tensor it belongs to.
void check_same_layout(const char* op, const char* name, const at::Tensor& grad, const at::Tensor& like);

}  // namespace actattn
