// actattn's C++ API for LibTorch users. The functions call the registered operators through the
// dispatcher, so they run on any device actattn was built for and are differentiable with autograd.
//
//   #include <actattn/actattn.h>
//   at::Tensor out = actattn::attention(q, k, v, {.activation = "sigmoid", .causal = true});
//   auto [y, state] = actattn::linear_attention(q, k, v, {.causal = true});
#pragma once

#include <ATen/core/Tensor.h>

#include <optional>
#include <string>

namespace actattn {

struct AttentionOptions {
  std::string activation = "softmax";  // "softmax", "sigmoid" or "relu"
  bool causal = false;                 // a query sees no later key (aligned as causal_alignment says)
  std::optional<double> scale;         // default 1 / sqrt(qk_dim)
  std::optional<double> bias;          // added to scores; default -log(k_len) for sigmoid, 0 for relu
  std::optional<double> divisor;       // divides probabilities; default k_len for relu, 1 for sigmoid
  // "top_left" (SDPA's): query i sees keys j <= i; "bottom_right" (FlashAttention's, for KV-cache
  // decoding): the last query sees every key, j <= i + n - q_len for a sequence of n keys.
  std::string causal_alignment = "top_left";
  // Attention dropout: each weight is dropped with probability dropout_p, the others scaled by
  // 1 / (1 - dropout_p). Applied whenever > 0 (pass 0 in evaluation); the mask comes from a seed drawn
  // from the default generator of q's device, so torch::manual_seed makes it reproducible.
  double dropout_p = 0.0;
  // Sliding window: query i sees keys i + o - window_left .. i + o + window_right, o the offset of
  // causal_alignment (0 top-left, keys - q_len bottom-right); -1 leaves that side unbounded. causal
  // needs window_right 0 or -1.
  int64_t window_left = -1;
  int64_t window_right = -1;
  std::optional<at::Tensor> key_lengths;  // (B,) int: keys past a sequence's length are padding
};

// q (B, H, Nq, Dk), k (B, Hkv, Nk, Dk), v (B, Hkv, Nk, Dv) -> (B, H, Nq, Dv); Hkv divides H (grouped-query
// attention when Hkv < H: key/value head h / (H / Hkv) serves query head h).
at::Tensor attention(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                     const AttentionOptions& options = {});

// The recurrent state of causal linear attention: sum_j phi(k_j) v_j^T (B, H, Dk, Dv) and sum_j phi(k_j)
// (B, H, Dk), in float32 (float64 for float64 inputs).
struct LinearAttentionState {
  at::Tensor kv;
  at::Tensor normalizer;
};

struct LinearAttentionOptions {
  std::string feature_map = "elu";  // "identity", "relu" or "elu" (elu(x) + 1)
  bool causal = false;
  bool normalize = true;
  double eps = 1e-6;
  std::optional<double> scale;  // multiplies phi(q); default 1 / sqrt(qk_dim)
  std::optional<at::Tensor> key_lengths;  // (B,) int: keys past a sequence's length are padding
};

struct LinearAttentionResult {
  at::Tensor out;              // (B, H, Nq, Dv)
  LinearAttentionState state;  // after this call's keys; feed it to the next call of a causal sequence
};

LinearAttentionResult linear_attention(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                                       const LinearAttentionOptions& options = {},
                                       const std::optional<LinearAttentionState>& initial_state = std::nullopt);

// The build of the CPU kernels this process runs: "avx512" or "avx2" (x86-64 only) or "baseline" (any
// CPU); the best the CPU supports, unless the environment variable ACTATTN_CPU_ISA names another.
// Throws std::runtime_error, as every CPU op then does, when ACTATTN_CPU_ISA names a build that the
// library lacks or this CPU cannot run.
const char* cpu_isa();

}  // namespace actattn
