// Plain-data descriptions of one attention call, shared by the CPU and CUDA kernels.
// Nothing here knows torch: csrc/ fills these structs from tensors (the flash-attention habit),
// so kernels can be built, read and tested as ordinary C++.
#pragma once

#include <cstdint>

#include "host_device.h"

namespace actattn {

// Element type of q, k, v and the outputs. Accumulation is float32 for every type but float64.
// Every backend takes all four; the CPU kernels read and write the half types in place (cpu/half_types.h).
enum class ScalarKind { kFloat32, kFloat64, kFloat16, kBFloat16 };

// The activation applied to each score s = scale * q.k + bias of quadratic attention.
enum class ScoreActivation { kSoftmax, kSigmoid, kRelu };

// The feature map phi applied to queries and keys of linear attention.
enum class FeatureMapKind { kIdentity, kRelu, kElu };

// A rank-4 tensor (batch, head, row, column) whose columns are contiguous (stride 1).
// Kernels read the other three strides, so transposed views of (B, N, H, D) tensors need no copy.
// head_group > 1 is grouped-query attention: kernels index every view by the query head h, and this
// tensor's stored head h / head_group serves head_group consecutive query heads (k and v of GQA).
struct RowView {
  void* data = nullptr;
  int64_t batch_stride = 0;
  int64_t head_stride = 0;
  int64_t row_stride = 0;
  int64_t head_group = 1;

  ACTATTN_HOST_DEVICE int64_t stored_head(int64_t h) const { return head_group == 1 ? h : h / head_group; }
};

// A contiguous (batch, head, row) tensor of per-row statistics (log-sum-exp, denominators).
struct RowStatsView {
  void* data = nullptr;  // batch * heads * rows elements, in the accumulation type
};

// Sizes shared by every op: q is (batch, heads, q_len, qk_dim), k is (batch, heads, k_len, qk_dim),
// v is (batch, heads, k_len, v_dim), the output is (batch, heads, q_len, v_dim). With grouped-query
// attention k and v have fewer heads (RowView::head_group); `heads` counts the query heads.
struct AttentionShape {
  int64_t batch = 0;
  int64_t heads = 0;
  int64_t q_len = 0;
  int64_t k_len = 0;
  int64_t qk_dim = 0;
  int64_t v_dim = 0;
};

// P = act(scale * Q K^T + bias) / divisor (softmax ignores bias and divisor), O = dropout(P) V.
struct QuadraticParams {
  ScalarKind dtype = ScalarKind::kFloat32;
  ScoreActivation activation = ScoreActivation::kSoftmax;
  bool causal = false;  // key j is visible to query i iff j <= i + causal_offset(...) (key_lengths.h)
  // Causal mask alignment: top-left (false: j <= i, SDPA's) or bottom-right (true: the last query sees
  // every key of its sequence, j <= i + n - q_len for its n keys; FlashAttention >= 2.1, KV-cache decoding).
  bool causal_bottom_right = false;
  // Sliding window (key_lengths.h: KeyBand): query i sees keys i + offset - window_left ..
  // i + offset + window_right, offset from the same alignment as the causal mask; < 0 is unbounded on
  // that side. causal bounds the right side at 0 whatever window_right says.
  int64_t window_left = -1;
  int64_t window_right = -1;
  AttentionShape shape;
  double scale = 1.0;
  double bias = 0.0;
  double divisor = 1.0;
  // Defaults that depend on the number of keys (sigmoid's bias -log n, relu's divisor n) are recomputed
  // per sequence from its key count (key_lengths.h) when these are set.
  bool bias_follows_keys = false;
  bool divisor_follows_keys = false;
  // (batch,) int64, optional: sequence b has keys [0, key_lengths[b]) (clamped to [0, k_len]); the rest
  // are padding and take no part. Null: every sequence has k_len keys.
  const int64_t* key_lengths = nullptr;
  // Attention dropout (kernels/dropout.h): each weight p_ij is kept with probability 1 - dropout_p and
  // scaled by 1 / (1 - dropout_p). dropout_seed (one int64, on the inputs' device) keys the generator
  // and is read only when dropout_p > 0; the backward regenerates the forward's mask from it.
  double dropout_p = 0.0;
  const int64_t* dropout_seed = nullptr;

  RowView q, k, v;
  RowView out;               // forward: written; backward: read (softmax only)
  RowStatsView log_sum_exp;  // softmax only: forward writes it, backward reads it
  RowStatsView delta;        // softmax backward only: workspace for rowsum(dO * O), batch * heads * q_len

  // Backward only. A null grad_q skips dQ; null grad_k and grad_v skip dK and dV, which are computed
  // together (both or neither).
  RowView grad_out;
  RowView grad_q, grad_k, grad_v;

  // Whether some query sees fewer than all of its sequence's keys by position (causal or a window):
  // the kernels' banded instantiation.
  ACTATTN_HOST_DEVICE bool banded() const { return causal || window_left >= 0 || window_right >= 0; }
};

// Linear attention: a_i = scale * phi(q_i), b_j = phi(k_j),
//   num_i = a_i^T S_i, den_i = a_i . z_i + eps, o_i = num_i / den_i (or num_i without normalisation),
// where S_i = S_0 + sum_{j visible to i} b_j v_j^T and z_i = z_0 + sum_{j visible} b_j.
// Causal: j <= i (q_len == k_len); non-causal: every j.
struct LinearParams {
  ScalarKind dtype = ScalarKind::kFloat32;
  FeatureMapKind feature_map = FeatureMapKind::kElu;
  bool causal = false;
  bool normalize = true;
  AttentionShape shape;
  double scale = 1.0;
  double eps = 1e-6;
  const int64_t* key_lengths = nullptr;  // as in QuadraticParams: keys past a sequence's length are padding

  RowView q, k, v;
  RowView out;
  // (batch, heads, qk_dim, v_dim) and (batch, heads, qk_dim), contiguous, accumulation type.
  // initial_* may be null (zero state); final_* are always written by the forward.
  const void* initial_state = nullptr;
  const void* initial_normalizer = nullptr;
  void* final_state = nullptr;
  void* final_normalizer = nullptr;
  RowStatsView denominator;  // (batch, heads, q_len): den_i, written by forward when normalize

  // Backward only. grad_final_* may be null (no gradient flows into the final state).
  RowView grad_out;
  const void* grad_final_state = nullptr;
  const void* grad_final_normalizer = nullptr;
  // Every kernel skips a null grad_q, or null grad_k and grad_v (both or neither).
  RowView grad_q, grad_k, grad_v;
  void* grad_initial_state = nullptr;       // always written, same layout as final_state
  void* grad_initial_normalizer = nullptr;  // always written, same layout as final_normalizer
  // Non-causal only, may be null: the forward's final state (layout of initial_*), which the backward
  // (CPU and CUDA) then reads instead of rebuilding it from the keys.
  const void* saved_state = nullptr;
  const void* saved_normalizer = nullptr;
  // CUDA only: linear_attention_forward_workspace / linear_attention_backward_workspace(params) elements.
  void* workspace = nullptr;
};

}  // namespace actattn
