// Quadratic attention backward on the CPU, by recomputation (FlashAttention-2 style):
//   s_ij = scale * q_i.k_j + bias, p_ij = prob(s_ij), dp_ij = dO_i.v_j, ds_ij = dscore(s_ij, p_ij, dp_ij, delta_i)
//   dV_j = sum_i p_ij dO_i,  dK_j = scale * sum_i ds_ij q_i,  dQ_i = scale * sum_j ds_ij k_j
// where, for softmax, p_ij = exp(s_ij - lse_i) and delta_i = dO_i . O_i.
//
// Two passes, each owning what it writes, so there are no atomics and the result is bit-identical
// run to run whatever the thread count: a key pass (one tile of kKeyTile keys per task, every query
// row streamed past it) writes dK and dV; a query pass (kQueryBlock rows per task, every key tile
// streamed past them) writes dQ. Scores are recomputed in both: twice the score flops of a single
// pass, in exchange for determinism and no N x N buffer.
// Memory: delta (batch * heads * q_len, softmax only) plus O(kKeyTile * (Dk + Dv)) per thread.
#include <algorithm>
#include <vector>

#include "../dispatch.h"
#include "cpu_kernels.h"
#include "quadratic_tile.h"
#include "row_math.h"

namespace actattn {
namespace {

using cpu::kKeyTile;
using cpu::kQueryBlock;

template <typename T, typename Acc, typename Activation, bool kCausal>
struct Backward {
  const QuadraticParams& p;
  Activation act;
  const Acc* lse;
  std::vector<Acc> delta;

  Backward(const QuadraticParams& params, Activation activation)
      : p(params), act(activation), lse(static_cast<const Acc*>(params.log_sum_exp.data)) {}

  // dL/ds of query row i against the first n keys of the tile, into ds (and p into probs).
  // q_scaled carries `scale`; scores and dprobs are scratch of kKeyTile.
  void row_grads(const cpu::KeyTile<Acc>& tile, int64_t q_row, const Acc* q_scaled, const Acc* dout, int64_t n,
                 Acc* probs, Acc* ds) const {
    const AttentionShape& s = p.shape;
    tile.row_times_tile(q_scaled, tile.k_t, s.qk_dim, n, Acc(p.bias), probs);
    tile.row_times_tile(dout, tile.v_t, s.v_dim, n, Acc(0), ds);  // dp, overwritten by ds below
    const Acc row_lse = Activation::kNormalizesRows ? lse[q_row] : Acc(0);
    const Acc row_delta = Activation::kNormalizesRows ? delta[q_row] : Acc(0);
#pragma omp simd
    for (int64_t t = 0; t < n; ++t) {
      const Acc score = probs[t];
      probs[t] = act.prob(score, row_lse);
      ds[t] = act.dscore(score, probs[t], ds[t], row_delta);
    }
  }

  template <typename Src>
  static void load_row(const Src* src, Acc alpha, int64_t n, Acc* dst) {
    for (int64_t d = 0; d < n; ++d) dst[d] = alpha * Acc(src[d]);
  }

  void run() {
    const AttentionShape& s = p.shape;
    const int64_t dk = s.qk_dim, dv = s.v_dim;
    const int64_t q_rows = s.batch * s.heads * s.q_len;
    const Acc scale = Acc(p.scale);

    if constexpr (Activation::kNormalizesRows) {
      delta.resize(q_rows);
#pragma omp parallel for schedule(static)
      for (int64_t row = 0; row < q_rows; ++row) {
        const int64_t i = row % s.q_len, bh = row / s.q_len;
        const int64_t b = bh / s.heads, h = bh % s.heads;
        delta[row] =
            cpu::dot<Acc>(cpu::row_ptr<T>(p.grad_out, b, h, i), cpu::row_ptr<T>(p.out, b, h, i), s.v_dim);
      }
    }

    const int64_t key_tiles = (s.k_len + kKeyTile - 1) / kKeyTile;
    const int64_t query_blocks = (s.q_len + kQueryBlock - 1) / kQueryBlock;
#pragma omp parallel
    {
      cpu::KeyTile<Acc> tile(dk, dv);
      std::vector<Acc> q_scaled(dk), dout(dv), probs(kKeyTile), ds(kKeyTile);
      std::vector<Acc> grad_k(kKeyTile * dk), grad_v(kKeyTile * dv), grad_q(kQueryBlock * dk);

#pragma omp for schedule(dynamic, 1)
      for (int64_t task = 0; task < s.batch * s.heads * key_tiles; ++task) {
        const int64_t bh = task / key_tiles, b = bh / s.heads, h = bh % s.heads;
        const int64_t j0 = (task % key_tiles) * kKeyTile;
        tile.template load<T>(p, b, h, j0, std::min(kKeyTile, s.k_len - j0), /*transpose_v=*/true);
        std::fill(grad_k.begin(), grad_k.end(), Acc(0));
        std::fill(grad_v.begin(), grad_v.end(), Acc(0));
        for (int64_t i = kCausal ? j0 : 0; i < s.q_len; ++i) {
          const int64_t n = tile.visible_to(i, kCausal);
          load_row(cpu::row_ptr<T>(p.q, b, h, i), scale, dk, q_scaled.data());
          load_row(cpu::row_ptr<T>(p.grad_out, b, h, i), Acc(1), dv, dout.data());
          row_grads(tile, bh * s.q_len + i, q_scaled.data(), dout.data(), n, probs.data(), ds.data());
          for (int64_t t = 0; t < n; ++t) {
            cpu::axpy(probs[t], dout.data(), grad_v.data() + t * dv, dv);
            cpu::axpy(ds[t], q_scaled.data(), grad_k.data() + t * dk, dk);  // q_scaled: the `scale` of dK
          }
        }
        for (int64_t t = 0; t < tile.cols; ++t) {
          cpu::store(grad_k.data() + t * dk, Acc(1), cpu::row_ptr<T>(p.grad_k, b, h, j0 + t), dk);
          cpu::store(grad_v.data() + t * dv, Acc(1), cpu::row_ptr<T>(p.grad_v, b, h, j0 + t), dv);
        }
      }

#pragma omp for schedule(dynamic, 1)
      for (int64_t task = 0; task < s.batch * s.heads * query_blocks; ++task) {
        const int64_t bh = task / query_blocks, b = bh / s.heads, h = bh % s.heads;
        const int64_t i0 = (task % query_blocks) * kQueryBlock;
        const int64_t rows = std::min(kQueryBlock, s.q_len - i0);
        std::fill(grad_q.begin(), grad_q.end(), Acc(0));
        const int64_t key_end = kCausal ? std::min(i0 + rows, s.k_len) : s.k_len;
        for (int64_t j0 = 0; j0 < key_end; j0 += kKeyTile) {
          tile.template load<T>(p, b, h, j0, std::min(kKeyTile, key_end - j0), /*transpose_v=*/true);
          for (int64_t r = 0; r < rows; ++r) {
            const int64_t i = i0 + r;
            const int64_t n = tile.visible_to(i, kCausal);
            if (n == 0) continue;
            load_row(cpu::row_ptr<T>(p.q, b, h, i), scale, dk, q_scaled.data());
            load_row(cpu::row_ptr<T>(p.grad_out, b, h, i), Acc(1), dv, dout.data());
            row_grads(tile, bh * s.q_len + i, q_scaled.data(), dout.data(), n, probs.data(), ds.data());
            Acc* grad_row = grad_q.data() + r * dk;
            for (int64_t t = 0; t < n; ++t) cpu::axpy(ds[t], tile.k.data() + t * dk, grad_row, dk);
          }
        }
        for (int64_t r = 0; r < rows; ++r) {
          cpu::store(grad_q.data() + r * dk, scale, cpu::row_ptr<T>(p.grad_q, b, h, i0 + r), dk);
        }
      }
    }
  }
};

}  // namespace

void quadratic_attention_backward_cpu(const QuadraticParams& params) {
  dispatch_dtype(params.dtype, [&](auto types) {
    using T = typename decltype(types)::scalar_t;
    using Acc = typename decltype(types)::acc_t;
    dispatch_score_activation<Acc>(params.activation, [&](auto activation) {
      activation.inv_divisor = Acc(1) / Acc(params.divisor);
      dispatch_bool(params.causal, [&](auto causal) {
        Backward<T, Acc, decltype(activation), decltype(causal)::value>(params, activation).run();
      });
    });
  });
}

}  // namespace actattn
