// Quadratic attention forward on the CPU: O = act(scale * Q K^T + bias) V.
//
// Algorithm: one query row per task (rows of all batches and heads are spread over OpenMP threads);
// the row walks the visible keys in tiles of kKeyTile. Softmax runs the online max/sum recurrence
// (FlashAttention): per tile the running max m and sum l are updated and the accumulator rescaled by
// exp(m_old - m_new), so no row of probabilities is ever stored. Sigmoid and ReLU need no row state.
// Memory: per thread one tile of scores and one row accumulator, O(kKeyTile + Dk + Dv); never N x N.
// Saved for backward: the output and, for softmax only, the row log-sum-exp (batch * heads * q_len).
// A row that sees no key (k_len == 0) gets a zero output and log-sum-exp -inf.
#include <algorithm>
#include <cmath>
#include <limits>
#include <vector>

#include "../dispatch.h"
#include "cpu_kernels.h"
#include "row_math.h"

namespace actattn {
namespace {

constexpr int64_t kKeyTile = 64;

template <typename T, typename Acc, typename Activation, bool kCausal>
void forward_rows(const QuadraticParams& p, Activation act) {
  const AttentionShape& s = p.shape;
  const int64_t total_rows = s.batch * s.heads * s.q_len;
  const Acc scale = Acc(p.scale);
  const Acc bias = Acc(p.bias);
  Acc* lse = static_cast<Acc*>(p.log_sum_exp.data);

#pragma omp parallel
  {
    std::vector<Acc> scores(kKeyTile), acc(s.v_dim), q_scaled(s.qk_dim);
#pragma omp for schedule(dynamic, 8)
    for (int64_t row = 0; row < total_rows; ++row) {
      const int64_t i = row % s.q_len;
      const int64_t b = row / (s.q_len * s.heads);
      const int64_t h = (row / s.q_len) % s.heads;
      const T* q = cpu::row_ptr<T>(p.q, b, h, i);
      for (int64_t d = 0; d < s.qk_dim; ++d) q_scaled[d] = scale * Acc(q[d]);
      std::fill(acc.begin(), acc.end(), Acc(0));

      const int64_t visible = kCausal ? std::min(i + 1, s.k_len) : s.k_len;
      Acc running_max = -std::numeric_limits<Acc>::infinity();
      Acc running_sum = 0;
      for (int64_t j0 = 0; j0 < visible; j0 += kKeyTile) {
        const int64_t n = std::min(kKeyTile, visible - j0);
        for (int64_t t = 0; t < n; ++t) {
          scores[t] = cpu::dot<Acc>(q_scaled.data(), cpu::row_ptr<T>(p.k, b, h, j0 + t), s.qk_dim) + bias;
        }
        if constexpr (Activation::kNormalizesRows) {
          Acc tile_max = running_max;
          for (int64_t t = 0; t < n; ++t) tile_max = std::max(tile_max, scores[t]);
          // exp(-inf - finite) = 0 resets the empty accumulator on the first tile.
          const Acc correction = std::exp(running_max - tile_max);
          running_sum *= correction;
          cpu::scale_in_place(correction, acc.data(), s.v_dim);
          for (int64_t t = 0; t < n; ++t) {
            const Acc weight = std::exp(scores[t] - tile_max);
            running_sum += weight;
            cpu::axpy(weight, cpu::row_ptr<T>(p.v, b, h, j0 + t), acc.data(), s.v_dim);
          }
          running_max = tile_max;
        } else {
          for (int64_t t = 0; t < n; ++t) {
            const Acc weight = act.prob(scores[t], Acc(0));
            if (weight != Acc(0)) cpu::axpy(weight, cpu::row_ptr<T>(p.v, b, h, j0 + t), acc.data(), s.v_dim);
          }
        }
      }

      T* out = cpu::row_ptr<T>(p.out, b, h, i);
      if constexpr (Activation::kNormalizesRows) {
        const bool any_key = running_sum > Acc(0);
        cpu::store(acc.data(), any_key ? Acc(1) / running_sum : Acc(0), out, s.v_dim);
        lse[row] = any_key ? running_max + std::log(running_sum) : -std::numeric_limits<Acc>::infinity();
      } else {
        cpu::store(acc.data(), Acc(1), out, s.v_dim);
      }
    }
  }
}

}  // namespace

void quadratic_attention_forward_cpu(const QuadraticParams& params) {
  dispatch_dtype(params.dtype, [&](auto types) {
    using T = typename decltype(types)::scalar_t;
    using Acc = typename decltype(types)::acc_t;
    dispatch_score_activation<Acc>(params.activation, [&](auto activation) {
      activation.inv_divisor = Acc(1) / Acc(params.divisor);
      dispatch_bool(params.causal, [&](auto causal) {
        forward_rows<T, Acc, decltype(activation), decltype(causal)::value>(params, activation);
      });
    });
  });
}

}  // namespace actattn
