// Quadratic attention backward on the CPU, by recomputation (FlashAttention-2 style):
//   s_ij = scale * q_i.k_j + bias, p_ij = prob(s_ij), dp_ij = dO_i.v_j, ds_ij = dscore(s_ij, p_ij, dp_ij, delta_i)
//   dV_j = sum_i p_ij dO_i,  dK_j = scale * sum_i ds_ij q_i,  dQ_i = scale * sum_j ds_ij k_j
// where, for softmax, p_ij = exp(s_ij - lse_i) and delta_i = dO_i . O_i. With dropout (dropout.h) the
// forward used z_ij p_ij, z_ij its regenerated factor: dV takes z_ij p_ij and ds_ij takes dp_ij z_ij in
// place of dp_ij (delta is unchanged: dO_i . O_i already sums the dropped weights).
//
// Each task owns what it writes, so there are no atomics and the result is bit-identical run to run
// whatever the thread count. Two schedules, chosen by how well the heads fill the threads:
// - one pass per (batch, head) (FlashAttention-2's loop order, as torch's CPU flash backward): its key
//   tiles in order, every query row streamed past each tile kQueryBlock rows at a time, so each tile's
//   scores and probabilities are computed once: dK, dV of the tile, and dQ accumulated in a per-thread
//   q_len x Dk buffer (5 tile products);
// - with fewer heads than threads: a key pass (one tile per task) writes dK and dV, a query pass
//   (kQueryBlock rows per task, every key tile streamed past them) writes dQ; scores are recomputed in
//   both (7 tile products), in exchange for parallelism within a head. It also serves calls wanting
//   only dQ or only dK, dV (a null grad view), running just that pass.
// Both sum every gradient in the same order and groups, so they give the same bits. Products are
// register-blocked (tile_gemm.h).
// Memory: delta (batch * heads * q_len, softmax only, in params.delta) plus, per thread,
// O((kKeyTile + kQueryBlock) * (Dk + Dv) + kQueryBlock * kKeyTile): the tile, the block's rows, and its
// probabilities and score gradients; and, in the one-pass schedule, q_len * Dk for the head's dQ.
#include <omp.h>

#include <algorithm>
#include <vector>

#include "../dispatch.h"
#include "../dropout.h"
#include "../key_lengths.h"
#include "cpu_kernels.h"
#include "dropout_factors.h"
#include "quadratic_tile.h"
#include "row_math.h"

namespace actattn {
namespace cpu {
inline namespace ACTATTN_CPU_ISA {
namespace {

template <typename T, typename Acc, typename Activation, bool kBanded>
struct Backward {
  const QuadraticParams& p;
  const Activation activation;
  const Acc* lse;
  Acc* delta;  // params.delta, filled here
  const Dropout<Acc> dropout;

  Backward(const QuadraticParams& params, Activation act)
      : p(params),
        activation(act),
        lse(static_cast<const Acc*>(params.log_sum_exp.data)),
        delta(static_cast<Acc*>(params.delta.data)),
        dropout(Dropout<Acc>::of(params)) {}

  // For kRows query rows starting at q_row0 (q rows pre-scaled, zero-padded past q_len) against the
  // tile: probabilities into probs and dL/ds into ds (both kRows x kKeyTile), zero where a row does not
  // see a key (up to the returned width rounded to whole kCols); with dropout, probs holds the dropped
  // weights z p. `keep` holds kKeyTile dropout factors. Returns the number of tile columns any of the
  // rows sees.
  int64_t row_block_grads(const cpu::KeyTile<Acc>& tile, const SequenceConstants<Acc>& constants, int64_t bh,
                          int64_t q_row0, const Acc* q_scaled, const Acc* dout, Acc* probs, Acc* ds,
                          Acc* keep) const {
    Activation act = activation;
    act.inv_divisor = constants.inv_divisor;
    const AttentionShape& s = p.shape;
    const int64_t last_row = std::min(q_row0 + kRows, s.q_len) - 1;
    const int64_t widest = tile.visible_to(last_row, kBanded).end;
    if (widest == 0) return 0;
    const int64_t width = cpu::padded_width(widest);
    cpu::rows_times_matrix(q_scaled, s.qk_dim, tile.k_t.data(), kKeyTile, s.qk_dim, width, constants.bias, probs,
                           kKeyTile);
    cpu::rows_times_matrix(dout, s.v_dim, tile.v_t.data(), kKeyTile, s.v_dim, width, Acc(0), ds, kKeyTile);
    for (int64_t r = 0; r < kRows; ++r) {
      const int64_t i = q_row0 + r;
      const auto [first, n] = i < s.q_len ? tile.visible_to(i, kBanded) : typename cpu::KeyTile<Acc>::Range{0, 0};
      Acc* prob_row = probs + r * kKeyTile;
      Acc* ds_row = ds + r * kKeyTile;  // holds dp on entry
      const Acc row_lse = Activation::kNormalizesRows && n > first ? lse[bh * s.q_len + i] : Acc(0);
      const Acc row_delta = Activation::kNormalizesRows && n > first ? delta[bh * s.q_len + i] : Acc(0);
      if (dropout.active && n > first) {
        cpu::dropout_factors(dropout, bh * s.q_len + i, tile.start, n, keep);
#pragma omp simd
        for (int64_t t = first; t < n; ++t) {
          const Acc score = prob_row[t];
          const Acc prob = act.prob(score, row_lse);
          ds_row[t] = act.dscore(score, prob, ds_row[t] * keep[t], row_delta);
          prob_row[t] = prob * keep[t];
        }
      } else {
#pragma omp simd
        for (int64_t t = first; t < n; ++t) {
          const Acc score = prob_row[t];
          prob_row[t] = act.prob(score, row_lse);
          ds_row[t] = act.dscore(score, prob_row[t], ds_row[t], row_delta);
        }
      }
      // Zero up to the padded width: the products above wrote scores there, and the key pass reads the
      // block's columns up to the widest row block's width; and before a window's first key.
      std::fill(prob_row, prob_row + first, Acc(0));
      std::fill(ds_row, ds_row + first, Acc(0));
      std::fill(prob_row + n, prob_row + width, Acc(0));
      std::fill(ds_row + n, ds_row + width, Acc(0));
    }
    return widest;
  }

  // Per-thread buffers. The key pass keeps a whole query block's probabilities and score gradients
  // (kQueryBlock x kKeyTile); the query pass uses the first kRows rows of probs and ds.
  struct Scratch {
    cpu::KeyTile<Acc> tile;
    std::vector<Acc> q_scaled, dout, probs, ds, grad_k, grad_v, grad_q, keep;
    Scratch(int64_t dk, int64_t dv)
        : tile(dk, dv),
          q_scaled(kQueryBlock * dk),
          dout(kQueryBlock * dv),
          probs(kQueryBlock * kKeyTile),
          ds(kQueryBlock * kKeyTile),
          grad_k(kKeyTile * dk),
          grad_v(kKeyTile * dv),
          grad_q(kQueryBlock * dk),
          keep(kKeyTile) {}
  };

  // dK and dV of the key tile at j0 (written to grad_k, grad_v); with head_grad_q (q_len x Dk, the
  // head's dQ so far) also each query row's dQ += dS K_tile, for a caller that walks the head's tiles
  // in order. Query rows stream past the tile kQueryBlock at a time: P and dS of the block, then
  // dV += P^T dO and dK += dS^T Q as register-blocked products with the block as the reduction (a
  // rank-kRows update per kRows rows would re-read and re-write dK and dV each time).
  void key_tile(Scratch& w, int64_t bh, int64_t j0, Acc* head_grad_q) const {
    const AttentionShape& s = p.shape;
    const int64_t dk = s.qk_dim, dv = s.v_dim, b = bh / s.heads, h = bh % s.heads;
    const int64_t keys = keys_of(p.key_lengths, b, s.k_len);
    const SequenceConstants<Acc> constants = sequence_constants<Acc>(p, b);
    // Padding keys of the tile (past the sequence's length) keep zero gradients.
    w.tile.template load<T>(p, b, h, j0, std::clamp<int64_t>(keys - j0, 0, kKeyTile),
                            {.keys_by_row = head_grad_q != nullptr, .values_by_row = false, .values_transposed = true});
    std::fill(w.grad_k.begin(), w.grad_k.end(), Acc(0));
    std::fill(w.grad_v.begin(), w.grad_v.end(), Acc(0));
    // Banded: from the first query that sees the tile's first key to the last that sees its last key.
    // Blocks start on a whole register block of rows, as the query pass's do, so that dQ is summed in
    // the same groups and comes out bit-identical whichever pass computed it; the rows before
    // `first_row` see nothing of the tile and are left out of the dK and dV sums (as in the unfused key
    // pass: same bits there too).
    const int64_t first_row = kBanded ? w.tile.band.first_query(j0, s.q_len) : 0;
    const int64_t row_end =
        kBanded && w.tile.cols > 0 ? w.tile.band.query_end(j0 + w.tile.cols - 1, s.q_len) : s.q_len;
    for (int64_t i = first_row / kRows * kRows; w.tile.cols > 0 && i < row_end; i += kQueryBlock) {
      const int64_t block_rows = std::min(kQueryBlock, row_end - i);
      const int64_t skipped = std::max<int64_t>(first_row - i, 0);  // rows before first_row (< kRows)
      const Acc scale = Acc(p.scale);
      cpu::load_rows<T>(p.q, b, h, i, kQueryBlock, s.q_len, dk, scale, w.q_scaled.data());
      cpu::load_rows<T>(p.grad_out, b, h, i, kQueryBlock, s.q_len, dv, Acc(1), w.dout.data());
      int64_t n = 0;  // tile columns any row of the block sees
      for (int64_t r0 = 0; r0 < block_rows; r0 += kRows) {
        Acc* group_probs = w.probs.data() + r0 * kKeyTile;
        Acc* group_ds = w.ds.data() + r0 * kKeyTile;
        const int64_t widest = row_block_grads(w.tile, constants, bh, i + r0, w.q_scaled.data() + r0 * dk,
                                               w.dout.data() + r0 * dv, group_probs, group_ds, w.keep.data());
        n = std::max(n, widest);
        if (head_grad_q != nullptr && widest > 0) {
          cpu::accumulate_rows_times_matrix(group_ds, kKeyTile, w.tile.k.data(), widest, dk,
                                            head_grad_q + (i + r0) * dk, dk);
        }
        // Zero what row_block_grads left unwritten (past its padded width; banded groups only), since
        // the products below read every group up to n.
        for (int64_t r = 0; r < kRows; ++r) {
          std::fill(group_probs + r * kKeyTile + cpu::padded_width(widest), group_probs + (r + 1) * kKeyTile, Acc(0));
          std::fill(group_ds + r * kKeyTile + cpu::padded_width(widest), group_ds + (r + 1) * kKeyTile, Acc(0));
        }
      }
      // Column t0 + r of P and dS (the block's rows down it) is key t0 + r's weight row; columns past n
      // are zero, so the last register block may run past n.
      const int64_t depth = block_rows - skipped;
      for (int64_t t0 = 0; t0 < n; t0 += kRows) {
        cpu::accumulate_columns_times_matrix(w.probs.data() + skipped * kKeyTile + t0, kKeyTile,
                                             w.dout.data() + skipped * dv, depth, dv, w.grad_v.data() + t0 * dv, dv);
        // q_scaled carries the `scale` of dK = scale * sum_i ds_ij q_i.
        cpu::accumulate_columns_times_matrix(w.ds.data() + skipped * kKeyTile + t0, kKeyTile,
                                             w.q_scaled.data() + skipped * dk, depth, dk, w.grad_k.data() + t0 * dk,
                                             dk);
      }
    }
    for (int64_t t = 0; t < std::min(kKeyTile, s.k_len - j0); ++t) {
      cpu::store(w.grad_k.data() + t * dk, Acc(1), cpu::row_ptr<T>(p.grad_k, b, h, j0 + t), dk);
      cpu::store(w.grad_v.data() + t * dv, Acc(1), cpu::row_ptr<T>(p.grad_v, b, h, j0 + t), dv);
    }
  }

  // dQ of the kQueryBlock rows at i0: every key tile they see streams past them.
  void query_block(Scratch& w, int64_t bh, int64_t i0) const {
    const AttentionShape& s = p.shape;
    const int64_t dk = s.qk_dim, dv = s.v_dim, b = bh / s.heads, h = bh % s.heads;
    const int64_t rows = std::min(kQueryBlock, s.q_len - i0);
    const Acc scale = Acc(p.scale);
    cpu::load_rows<T>(p.q, b, h, i0, kQueryBlock, s.q_len, dk, scale, w.q_scaled.data());
    cpu::load_rows<T>(p.grad_out, b, h, i0, kQueryBlock, s.q_len, dv, Acc(1), w.dout.data());
    std::fill(w.grad_q.begin(), w.grad_q.end(), Acc(0));
    const int64_t keys = keys_of(p.key_lengths, b, s.k_len);
    const SequenceConstants<Acc> constants = sequence_constants<Acc>(p, b);
    const KeyBand band = key_band(p, keys);
    const int64_t key_begin = kBanded ? band.begin(i0) / kKeyTile * kKeyTile : 0;
    const int64_t key_end = kBanded ? band.end(i0 + rows - 1) : keys;
    for (int64_t j0 = key_begin; j0 < key_end; j0 += kKeyTile) {
      w.tile.template load<T>(p, b, h, j0, std::min(kKeyTile, key_end - j0),
                              {.keys_by_row = true, .values_by_row = false, .values_transposed = true});
      for (int64_t r0 = 0; r0 < rows; r0 += kRows) {
        const int64_t n = row_block_grads(w.tile, constants, bh, i0 + r0, w.q_scaled.data() + r0 * dk,
                                          w.dout.data() + r0 * dv, w.probs.data(), w.ds.data(), w.keep.data());
        cpu::accumulate_rows_times_matrix(w.ds.data(), kKeyTile, w.tile.k.data(), n, dk, w.grad_q.data() + r0 * dk,
                                          dk);
      }
    }
    for (int64_t r = 0; r < rows; ++r) {
      cpu::store(w.grad_q.data() + r * dk, scale, cpu::row_ptr<T>(p.grad_q, b, h, i0 + r), dk);
    }
  }

  void run() {
    const AttentionShape& s = p.shape;
    const int64_t dk = s.qk_dim, dv = s.v_dim;
    const int64_t heads = s.batch * s.heads;

    if constexpr (Activation::kNormalizesRows) {
#pragma omp parallel for schedule(static)
      for (int64_t row = 0; row < heads * s.q_len; ++row) {
        const int64_t i = row % s.q_len, bh = row / s.q_len;
        const int64_t b = bh / s.heads, h = bh % s.heads;
        delta[row] = cpu::dot<Acc>(cpu::row_ptr<T>(p.grad_out, b, h, i), cpu::row_ptr<T>(p.out, b, h, i), dv);
      }
    }

    const int64_t key_tiles = (s.k_len + kKeyTile - 1) / kKeyTile;
    const int64_t query_blocks = (s.q_len + kQueryBlock - 1) / kQueryBlock;
    const bool wants_q = p.grad_q.data != nullptr, wants_kv = p.grad_k.data != nullptr;
    // One pass per head when all three gradients are wanted and the heads keep every thread busy: each
    // tile's scores are then computed once, not twice (5 products instead of 7). It needs a q_len x Dk
    // buffer per thread for the head's dQ. With fewer heads than threads, or with whole heads leaving
    // threads idle for longer than the saved products, the two passes split each head instead.
    // Both ways give the same bits (see key_tile), so the choice never shows in the results.
    const int64_t threads = omp_get_max_threads();
    const int64_t rounds = (heads + threads - 1) / threads;
    const bool fused = wants_q && wants_kv && rounds * 5 * threads <= heads * 7;
#pragma omp parallel
    {
      Scratch w(dk, dv);
      // The same decisions in every thread, so the worksharing loops stay matched.
      if (fused) {
        // Rows up to a whole register block: the last group's dQ rows past q_len are written (with zeros).
        std::vector<Acc> head_grad_q((s.q_len + kRows - 1) / kRows * kRows * dk);
        const Acc scale = Acc(p.scale);
#pragma omp for schedule(dynamic, 1)
        for (int64_t bh = 0; bh < heads; ++bh) {
          std::fill(head_grad_q.begin(), head_grad_q.end(), Acc(0));
          for (int64_t j0 = 0; j0 < s.k_len; j0 += kKeyTile) key_tile(w, bh, j0, head_grad_q.data());
          const int64_t b = bh / s.heads, h = bh % s.heads;
          for (int64_t i = 0; i < s.q_len; ++i)
            cpu::store(head_grad_q.data() + i * dk, scale, cpu::row_ptr<T>(p.grad_q, b, h, i), dk);
        }
      } else {
        // Each pass only when its gradients are wanted.
        const int64_t key_tasks = wants_kv ? heads * key_tiles : 0;
        const int64_t query_tasks = wants_q ? heads * query_blocks : 0;
#pragma omp for schedule(dynamic, 1)
        for (int64_t task = 0; task < key_tasks; ++task) key_tile(w, task / key_tiles, (task % key_tiles) * kKeyTile, nullptr);
#pragma omp for schedule(dynamic, 1)
        for (int64_t task = 0; task < query_tasks; ++task)
          query_block(w, task / query_blocks, (task % query_blocks) * kQueryBlock);
      }
    }
  }
};

}  // namespace

void quadratic_attention_backward(const QuadraticParams& params) {
  dispatch_dtype(params.dtype, [&](auto types) {
    using T = typename decltype(types)::scalar_t;
    using Acc = typename decltype(types)::acc_t;
    dispatch_score_activation<Acc>(params.activation, [&](auto activation) {
      dispatch_bool(params.banded(), [&](auto banded) {
        Backward<T, Acc, decltype(activation), decltype(banded)::value>(params, activation).run();
      });
    });
  });
}

}  // namespace ACTATTN_CPU_ISA
}  // namespace cpu
}  // namespace actattn
