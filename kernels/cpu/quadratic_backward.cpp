// Quadratic attention backward on the CPU, by recomputation (FlashAttention-2 style):
//   s_ij = scale * q_i.k_j + bias, p_ij = prob(s_ij), dp_ij = dO_i.v_j, ds_ij = dscore(s_ij, p_ij, dp_ij, delta_i)
//   dV_j = sum_i p_ij dO_i,  dK_j = scale * sum_i ds_ij q_i,  dQ_i = scale * sum_j ds_ij k_j
// where, for softmax, p_ij = exp(s_ij - lse_i) and delta_i = dO_i . O_i.
//
// Two passes, each owning what it writes, so there are no atomics and the result is bit-identical
// run to run whatever the thread count: a key pass (one tile of kKeyTile keys per task, every query
// row streamed past it kRows at a time) writes dK and dV; a query pass (kQueryBlock rows per task,
// every key tile streamed past them) writes dQ. A pass runs only when its gradients are wanted (a
// null grad view). Scores are recomputed in both: twice the score flops
// of a single pass, in exchange for determinism and no N x N buffer. Products are register-blocked
// (tile_gemm.h).
// Memory: delta (batch * heads * q_len, softmax only, in params.delta) plus O((kKeyTile + kQueryBlock) * (Dk + Dv)) per
// thread.
#include <algorithm>
#include <vector>

#include "../dispatch.h"
#include "../key_lengths.h"
#include "cpu_kernels.h"
#include "quadratic_tile.h"
#include "row_math.h"

namespace actattn {
namespace {

using cpu::kKeyTile;
using cpu::kQueryBlock;
using cpu::kRows;

template <typename T, typename Acc, typename Activation, bool kCausal>
struct Backward {
  const QuadraticParams& p;
  const Activation activation;
  const Acc* lse;
  Acc* delta;  // params.delta, filled here

  Backward(const QuadraticParams& params, Activation act)
      : p(params),
        activation(act),
        lse(static_cast<const Acc*>(params.log_sum_exp.data)),
        delta(static_cast<Acc*>(params.delta.data)) {}

  // For kRows query rows starting at q_row0 (q rows pre-scaled, zero-padded past q_len) against the
  // tile: probabilities into probs and dL/ds into ds (both kRows x kKeyTile), zero where a row does not
  // see a key (up to the returned width rounded to whole kCols). Returns the number of tile columns any
  // of the rows sees.
  int64_t row_block_grads(const cpu::KeyTile<Acc>& tile, const SequenceConstants<Acc>& constants, int64_t bh,
                          int64_t q_row0, const Acc* q_scaled, const Acc* dout, Acc* probs, Acc* ds) const {
    Activation act = activation;
    act.inv_divisor = constants.inv_divisor;
    const AttentionShape& s = p.shape;
    const int64_t last_row = std::min(q_row0 + kRows, s.q_len) - 1;
    const int64_t widest = tile.visible_to(last_row, kCausal);
    if (widest == 0) return 0;
    const int64_t width = cpu::padded_width(widest);
    cpu::rows_times_matrix(q_scaled, s.qk_dim, tile.k_t.data(), kKeyTile, s.qk_dim, width, constants.bias, probs,
                           kKeyTile);
    cpu::rows_times_matrix(dout, s.v_dim, tile.v_t.data(), kKeyTile, s.v_dim, width, Acc(0), ds, kKeyTile);
    for (int64_t r = 0; r < kRows; ++r) {
      const int64_t i = q_row0 + r;
      const int64_t n = i < s.q_len ? tile.visible_to(i, kCausal) : 0;
      Acc* prob_row = probs + r * kKeyTile;
      Acc* ds_row = ds + r * kKeyTile;  // holds dp on entry
      const Acc row_lse = Activation::kNormalizesRows && n > 0 ? lse[bh * s.q_len + i] : Acc(0);
      const Acc row_delta = Activation::kNormalizesRows && n > 0 ? delta[bh * s.q_len + i] : Acc(0);
#pragma omp simd
      for (int64_t t = 0; t < n; ++t) {
        const Acc score = prob_row[t];
        prob_row[t] = act.prob(score, row_lse);
        ds_row[t] = act.dscore(score, prob_row[t], ds_row[t], row_delta);
      }
      // Zero up to the padded width: the products above wrote scores there, and the key pass reads the
      // block's columns up to the widest row block's width.
      std::fill(prob_row + n, prob_row + width, Acc(0));
      std::fill(ds_row + n, ds_row + width, Acc(0));
    }
    return widest;
  }

  void run() {
    const AttentionShape& s = p.shape;
    const int64_t dk = s.qk_dim, dv = s.v_dim;
    const int64_t q_rows = s.batch * s.heads * s.q_len;
    const Acc scale = Acc(p.scale);

    if constexpr (Activation::kNormalizesRows) {
#pragma omp parallel for schedule(static)
      for (int64_t row = 0; row < q_rows; ++row) {
        const int64_t i = row % s.q_len, bh = row / s.q_len;
        const int64_t b = bh / s.heads, h = bh % s.heads;
        delta[row] = cpu::dot<Acc>(cpu::row_ptr<T>(p.grad_out, b, h, i), cpu::row_ptr<T>(p.out, b, h, i), dv);
      }
    }

    const int64_t key_tiles = (s.k_len + kKeyTile - 1) / kKeyTile;
    const int64_t query_blocks = (s.q_len + kQueryBlock - 1) / kQueryBlock;
#pragma omp parallel
    {
      cpu::KeyTile<Acc> tile(dk, dv);
      std::vector<Acc> q_scaled(kQueryBlock * dk), dout(kQueryBlock * dv);
      // The key pass keeps a whole query block's probabilities and score gradients (kQueryBlock x
      // kKeyTile) and their transposes; the query pass uses the first kRows rows of probs and ds.
      std::vector<Acc> probs(kQueryBlock * kKeyTile), ds(kQueryBlock * kKeyTile);
      std::vector<Acc> probs_t(kKeyTile * kQueryBlock), ds_t(kKeyTile * kQueryBlock);
      std::vector<Acc> grad_k(kKeyTile * dk), grad_v(kKeyTile * dv), grad_q(kQueryBlock * dk);

      // Each pass only when its gradients are wanted (the same for every thread, so the worksharing
      // loops stay matched).
      const int64_t key_tasks = p.grad_k.data != nullptr ? s.batch * s.heads * key_tiles : 0;
      const int64_t query_tasks = p.grad_q.data != nullptr ? s.batch * s.heads * query_blocks : 0;
#pragma omp for schedule(dynamic, 1)
      for (int64_t task = 0; task < key_tasks; ++task) {
        const int64_t bh = task / key_tiles, b = bh / s.heads, h = bh % s.heads;
        const int64_t j0 = (task % key_tiles) * kKeyTile;
        const int64_t keys = keys_of(p.key_lengths, b, s.k_len);
        const SequenceConstants<Acc> constants = sequence_constants<Acc>(p, b);
        // Padding keys of the tile (past the sequence's length) keep zero gradients.
        tile.template load<T>(p, b, h, j0, std::clamp<int64_t>(keys - j0, 0, kKeyTile), /*transpose_v=*/true);
        std::fill(grad_k.begin(), grad_k.end(), Acc(0));
        std::fill(grad_v.begin(), grad_v.end(), Acc(0));
        // Query rows stream past the tile kQueryBlock at a time: P and dS of the block, then
        // dV += P^T dO and dK += dS^T Q as register-blocked products with the block as the reduction
        // (a rank-kRows update per kRows rows would re-read and re-write dK and dV each time).
        // Causal: from the first query that sees the tile's first key (i + offset >= j0).
        const int64_t first_row = kCausal ? first_causal_query(j0, tile.causal_offset) : 0;
        for (int64_t i = first_row; tile.cols > 0 && i < s.q_len; i += kQueryBlock) {
          const int64_t block_rows = std::min(kQueryBlock, s.q_len - i);
          cpu::load_rows<T>(p.q, b, h, i, kQueryBlock, s.q_len, dk, scale, q_scaled.data());
          cpu::load_rows<T>(p.grad_out, b, h, i, kQueryBlock, s.q_len, dv, Acc(1), dout.data());
          std::fill(probs.begin(), probs.end(), Acc(0));
          std::fill(ds.begin(), ds.end(), Acc(0));
          int64_t n = 0;  // tile columns any row of the block sees
          for (int64_t r0 = 0; r0 < block_rows; r0 += kRows) {
            n = std::max(n, row_block_grads(tile, constants, bh, i + r0, q_scaled.data() + r0 * dk,
                                            dout.data() + r0 * dv, probs.data() + r0 * kKeyTile,
                                            ds.data() + r0 * kKeyTile));
          }
          cpu::transpose_block(probs.data(), block_rows, n, kKeyTile, probs_t.data(), kQueryBlock);
          cpu::transpose_block(ds.data(), block_rows, n, kKeyTile, ds_t.data(), kQueryBlock);
          for (int64_t t0 = 0; t0 < n; t0 += kRows) {
            cpu::accumulate_rows_times_matrix(probs_t.data() + t0 * kQueryBlock, kQueryBlock, dout.data(), block_rows,
                                              dv, grad_v.data() + t0 * dv, dv);
            // q_scaled carries the `scale` of dK = scale * sum_i ds_ij q_i.
            cpu::accumulate_rows_times_matrix(ds_t.data() + t0 * kQueryBlock, kQueryBlock, q_scaled.data(), block_rows,
                                              dk, grad_k.data() + t0 * dk, dk);
          }
        }
        for (int64_t t = 0; t < std::min(kKeyTile, s.k_len - j0); ++t) {
          cpu::store(grad_k.data() + t * dk, Acc(1), cpu::row_ptr<T>(p.grad_k, b, h, j0 + t), dk);
          cpu::store(grad_v.data() + t * dv, Acc(1), cpu::row_ptr<T>(p.grad_v, b, h, j0 + t), dv);
        }
      }

#pragma omp for schedule(dynamic, 1)
      for (int64_t task = 0; task < query_tasks; ++task) {
        const int64_t bh = task / query_blocks, b = bh / s.heads, h = bh % s.heads;
        const int64_t i0 = (task % query_blocks) * kQueryBlock;
        const int64_t rows = std::min(kQueryBlock, s.q_len - i0);
        cpu::load_rows<T>(p.q, b, h, i0, kQueryBlock, s.q_len, dk, scale, q_scaled.data());
        cpu::load_rows<T>(p.grad_out, b, h, i0, kQueryBlock, s.q_len, dv, Acc(1), dout.data());
        std::fill(grad_q.begin(), grad_q.end(), Acc(0));
        const int64_t keys = keys_of(p.key_lengths, b, s.k_len);
        const SequenceConstants<Acc> constants = sequence_constants<Acc>(p, b);
        const int64_t key_end = kCausal ? causal_key_end(i0 + rows - 1, causal_offset(p, keys), keys) : keys;
        for (int64_t j0 = 0; j0 < key_end; j0 += kKeyTile) {
          tile.template load<T>(p, b, h, j0, std::min(kKeyTile, key_end - j0), /*transpose_v=*/true);
          for (int64_t r0 = 0; r0 < rows; r0 += kRows) {
            const int64_t n = row_block_grads(tile, constants, bh, i0 + r0, q_scaled.data() + r0 * dk,
                                              dout.data() + r0 * dv, probs.data(), ds.data());
            cpu::accumulate_rows_times_matrix(ds.data(), kKeyTile, tile.k.data(), n, dk, grad_q.data() + r0 * dk, dk);
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
      dispatch_bool(params.causal, [&](auto causal) {
        Backward<T, Acc, decltype(activation), decltype(causal)::value>(params, activation).run();
      });
    });
  });
}

}  // namespace actattn
