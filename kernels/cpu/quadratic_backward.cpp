// Quadratic attention backward on the CPU, by recomputation (FlashAttention-2 style):
//   s_ij = scale * q_i.k_j + bias, p_ij = prob(s_ij), dp_ij = dO_i.v_j, ds_ij = dscore(s_ij, p_ij, dp_ij, delta_i)
//   dV_j = sum_i p_ij dO_i,  dK_j = scale * sum_i ds_ij q_i,  dQ_i = scale * sum_j ds_ij k_j
// where, for softmax, p_ij = exp(s_ij - lse_i) and delta_i = dO_i . O_i.
//
// Two passes, each owning what it writes, so there are no atomics and the result is bit-identical
// run to run whatever the thread count: a key pass (one key row per task) writes dK and dV, a query
// pass (one query row per task) writes dQ. Scores are recomputed in both: twice the flops of a
// single pass, in exchange for determinism and no N x N buffer.
// Memory: delta (batch * heads * q_len, softmax only) plus O(Dk + Dv) per thread.
#include <algorithm>
#include <vector>

#include "../dispatch.h"
#include "cpu_kernels.h"
#include "row_math.h"

namespace actattn {
namespace {

template <typename T, typename Acc, typename Activation, bool kCausal>
void backward_rows(const QuadraticParams& p, Activation act) {
  const AttentionShape& s = p.shape;
  const int64_t q_rows = s.batch * s.heads * s.q_len;
  const int64_t k_rows = s.batch * s.heads * s.k_len;
  const Acc scale = Acc(p.scale);
  const Acc bias = Acc(p.bias);
  const Acc* lse = static_cast<const Acc*>(p.log_sum_exp.data);

  std::vector<Acc> delta(Activation::kNormalizesRows ? q_rows : 0);
  if constexpr (Activation::kNormalizesRows) {
#pragma omp parallel for schedule(static)
    for (int64_t row = 0; row < q_rows; ++row) {
      const int64_t i = row % s.q_len, bh = row / s.q_len;
      const int64_t b = bh / s.heads, h = bh % s.heads;
      delta[row] = cpu::dot<Acc>(cpu::row_ptr<T>(p.grad_out, b, h, i), cpu::row_ptr<T>(p.out, b, h, i), s.v_dim);
    }
  }

  // Score, probability and dL/ds of one (query, key) pair; q_scaled already carries `scale`.
  auto score_grad = [&](const Acc* q_scaled, const T* k, const T* v, const T* dout, int64_t q_row, Acc* prob) {
    const Acc score = cpu::dot<Acc>(q_scaled, k, s.qk_dim) + bias;
    const Acc row_lse = Activation::kNormalizesRows ? lse[q_row] : Acc(0);
    const Acc row_delta = Activation::kNormalizesRows ? delta[q_row] : Acc(0);
    *prob = act.prob(score, row_lse);
    const Acc dp = cpu::dot<Acc>(dout, v, s.v_dim);
    return act.dscore(score, *prob, dp, row_delta);
  };

#pragma omp parallel
  {
    std::vector<Acc> q_scaled(s.qk_dim), grad_k(s.qk_dim), grad_v(s.v_dim);
#pragma omp for schedule(dynamic, 8)
    for (int64_t row = 0; row < k_rows; ++row) {
      const int64_t j = row % s.k_len, bh = row / s.k_len;
      const int64_t b = bh / s.heads, h = bh % s.heads;
      const T* k = cpu::row_ptr<T>(p.k, b, h, j);
      const T* v = cpu::row_ptr<T>(p.v, b, h, j);
      std::fill(grad_k.begin(), grad_k.end(), Acc(0));
      std::fill(grad_v.begin(), grad_v.end(), Acc(0));
      for (int64_t i = kCausal ? j : 0; i < s.q_len; ++i) {
        const T* q = cpu::row_ptr<T>(p.q, b, h, i);
        const T* dout = cpu::row_ptr<T>(p.grad_out, b, h, i);
        for (int64_t d = 0; d < s.qk_dim; ++d) q_scaled[d] = scale * Acc(q[d]);
        Acc prob;
        const Acc ds = score_grad(q_scaled.data(), k, v, dout, bh * s.q_len + i, &prob);
        if (prob != Acc(0)) cpu::axpy(prob, dout, grad_v.data(), s.v_dim);
        if (ds != Acc(0)) cpu::axpy(ds, q, grad_k.data(), s.qk_dim);
      }
      cpu::store(grad_k.data(), scale, cpu::row_ptr<T>(p.grad_k, b, h, j), s.qk_dim);
      cpu::store(grad_v.data(), Acc(1), cpu::row_ptr<T>(p.grad_v, b, h, j), s.v_dim);
    }

    std::vector<Acc> grad_q(s.qk_dim);
#pragma omp for schedule(dynamic, 8)
    for (int64_t row = 0; row < q_rows; ++row) {
      const int64_t i = row % s.q_len, bh = row / s.q_len;
      const int64_t b = bh / s.heads, h = bh % s.heads;
      const T* q = cpu::row_ptr<T>(p.q, b, h, i);
      const T* dout = cpu::row_ptr<T>(p.grad_out, b, h, i);
      for (int64_t d = 0; d < s.qk_dim; ++d) q_scaled[d] = scale * Acc(q[d]);
      std::fill(grad_q.begin(), grad_q.end(), Acc(0));
      const int64_t visible = kCausal ? std::min(i + 1, s.k_len) : s.k_len;
      for (int64_t j = 0; j < visible; ++j) {
        const T* k = cpu::row_ptr<T>(p.k, b, h, j);
        Acc prob;
        const Acc ds = score_grad(q_scaled.data(), k, cpu::row_ptr<T>(p.v, b, h, j), dout, row, &prob);
        if (ds != Acc(0)) cpu::axpy(ds, k, grad_q.data(), s.qk_dim);
      }
      cpu::store(grad_q.data(), scale, cpu::row_ptr<T>(p.grad_q, b, h, i), s.qk_dim);
    }
  }
}

}  // namespace

void quadratic_attention_backward_cpu(const QuadraticParams& params) {
  dispatch_dtype(params.dtype, [&](auto types) {
    using T = typename decltype(types)::scalar_t;
    using Acc = typename decltype(types)::acc_t;
    dispatch_score_activation<Acc>(params.activation, [&](auto activation) {
      activation.inv_divisor = Acc(1) / Acc(params.divisor);
      dispatch_bool(params.causal, [&](auto causal) {
        backward_rows<T, Acc, decltype(activation), decltype(causal)::value>(params, activation);
      });
    });
  });
}

}  // namespace actattn
