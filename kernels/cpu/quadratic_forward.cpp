// Quadratic attention forward on the CPU: O = act(scale * Q K^T + bias) V.
//
// Algorithm: tasks are blocks of kQueryBlock query rows of one (batch, head), spread over OpenMP
// threads. A block walks the keys visible to its last row in tiles of kKeyTile (quadratic_tile.h);
// each tile is loaded once and serves the block's rows kRows at a time through register-blocked
// products (tile_gemm.h): scores S = Q K^T, the activation, then O += P V. Softmax runs the online
// max/sum recurrence (FlashAttention): per tile the running max m and sum l are updated and the row
// accumulator rescaled by exp(m_old - m_new), so no row of probabilities is ever stored. Sigmoid and
// ReLU need no row state. Causal rows zero the probabilities of the keys after them, sliding-window
// rows those outside their window, and a block skips the key tiles none of its rows sees (key_lengths.h:
// KeyBand, aligned top-left or bottom-right). Dropout (dropout.h) multiplies each weight by its factor
// after softmax's row sum took it, so the sum and log-sum-exp are those of the undropped weights.
// Memory: per thread one key/value tile and the block's rows, O(kKeyTile * (Dk + Dv) +
// kQueryBlock * (Dk + Dv)); never N x N.
// Saved for backward: the output and, for softmax only, the row log-sum-exp (batch * heads * q_len).
// Keys past a sequence's key length (params.key_lengths) are skipped like masked ones. A row that sees
// no key gets a zero output and log-sum-exp -inf.
#include <algorithm>
#include <cmath>
#include <limits>
#include <vector>

#include "../dispatch.h"
#include "../dropout.h"
#include "../exp.h"
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
void forward_blocks(const QuadraticParams& p, const Activation activation) {
  const AttentionShape& s = p.shape;
  const int64_t dk = s.qk_dim, dv = s.v_dim;
  const int64_t blocks_per_head = (s.q_len + kQueryBlock - 1) / kQueryBlock;
  constexpr Acc kNegInf = -std::numeric_limits<Acc>::infinity();
  Acc* lse = static_cast<Acc*>(p.log_sum_exp.data);
  const Dropout<Acc> dropout = Dropout<Acc>::of(p);

#pragma omp parallel
  {
    Activation act = activation;  // per thread: its divisor changes with the sequence
    cpu::KeyTile<Acc> tile(dk, dv);
    std::vector<Acc> q_block(kQueryBlock * dk), acc(kQueryBlock * dv), probs(kRows * kKeyTile);
    std::vector<Acc> row_max(kQueryBlock), row_sum_lanes(kQueryBlock * cpu::kLanes), keep(dropout.active ? kKeyTile : 0);
#pragma omp for schedule(dynamic, 1)
    for (int64_t task = 0; task < s.batch * s.heads * blocks_per_head; ++task) {
      const int64_t bh = task / blocks_per_head, b = bh / s.heads, h = bh % s.heads;
      const int64_t i0 = (task % blocks_per_head) * kQueryBlock;
      const int64_t rows = std::min(kQueryBlock, s.q_len - i0);
      const int64_t keys = keys_of(p.key_lengths, b, s.k_len);
      const SequenceConstants<Acc> constants = sequence_constants<Acc>(p, b);
      act.inv_divisor = constants.inv_divisor;
      cpu::load_rows<T>(p.q, b, h, i0, kQueryBlock, s.q_len, dk, Acc(p.scale), q_block.data());
      std::fill(acc.begin(), acc.end(), Acc(0));
      std::fill(row_max.begin(), row_max.end(), kNegInf);
      std::fill(row_sum_lanes.begin(), row_sum_lanes.end(), Acc(0));

      // Banded (causal, a window): the tiles from the one holding the block's first row's first key to
      // its last row's last key (none when even that row sees none); whole tiles outside are skipped.
      const KeyBand band = key_band(p, keys);
      const int64_t key_begin = kBanded ? band.begin(i0) / kKeyTile * kKeyTile : 0;
      const int64_t key_end = kBanded ? band.end(i0 + rows - 1) : keys;
      for (int64_t j0 = key_begin; j0 < key_end; j0 += kKeyTile) {
        tile.template load<T>(p, b, h, j0, std::min(kKeyTile, key_end - j0),
                              {.keys_by_row = false, .values_by_row = true, .values_transposed = false});
        for (int64_t r0 = 0; r0 < rows; r0 += kRows) {
          const int64_t last_row = std::min(i0 + r0 + kRows, i0 + rows) - 1;
          // Each row sees the tile's keys [first, end); both grow with the row.
          const int64_t widest = tile.visible_to(last_row, kBanded).end;
          if (widest == 0) continue;
          cpu::rows_times_matrix(q_block.data() + r0 * dk, dk, tile.k_t.data(), kKeyTile, dk,
                                 cpu::padded_width(widest), constants.bias, probs.data(), kKeyTile);
          typename cpu::KeyTile<Acc>::Range seen[kRows];
          for (int64_t r = 0; r < kRows; ++r)
            seen[r] = r0 + r < rows ? tile.visible_to(i0 + r0 + r, kBanded) : typename cpu::KeyTile<Acc>::Range{0, 0};
          if constexpr (Activation::kNormalizesRows) {
            // The block's rows' new maxima first, then all their corrections in one vector exp: per
            // row, max -> exp -> rescale is a chain of dependent latencies, which one row at a time
            // left to the out-of-order window to overlap (a scalar exp and a 16-step horizontal sum per
            // row and tile; this form measured 2-3 % faster on AVX-512, D = 64 and 128).
            Acc tile_max[kRows], correction[kRows];
            for (int64_t r = 0; r < kRows; ++r) {
              const auto [first, n] = seen[r];
              tile_max[r] = n > first ? cpu::max_of(probs.data() + r * kKeyTile + first, n - first, row_max[r0 + r])
                                      : row_max[r0 + r];
            }
            // exp(-inf - finite) = 0 resets the empty accumulator on the first tile; a row without
            // keys in this tile keeps its state (exp(0) = 1, and -inf - -inf would be NaN).
#pragma omp simd
            for (int64_t r = 0; r < kRows; ++r)
              correction[r] = kernel_exp(seen[r].end > seen[r].first ? row_max[r0 + r] - tile_max[r] : Acc(0));
            for (int64_t r = 0; r < kRows; ++r) {
              const auto [first, n] = seen[r];
              if (n <= first) continue;
              const int64_t qr = r0 + r;
              Acc* row = probs.data() + r * kKeyTile;
              cpu::scale_in_place(correction[r], acc.data() + qr * dv, dv);
              // The row's sum stays in kLanes partial sums until the block is stored: no horizontal
              // reduction per tile.
              Acc* sum_lanes = row_sum_lanes.data() + qr * cpu::kLanes;
              cpu::scale_in_place(correction[r], sum_lanes, cpu::kLanes);
              int64_t t = first;
              for (; t + cpu::kLanes <= n; t += cpu::kLanes) {
#pragma omp simd
                for (int64_t l = 0; l < cpu::kLanes; ++l) {
                  row[t + l] = kernel_exp(row[t + l] - tile_max[r]);
                  sum_lanes[l] += row[t + l];
                }
              }
              for (; t < n; ++t) {
                row[t] = kernel_exp(row[t] - tile_max[r]);
                sum_lanes[t % cpu::kLanes] += row[t];
              }
              row_max[qr] = tile_max[r];
            }
          }
          for (int64_t r = 0; r < kRows; ++r) {
            Acc* row = probs.data() + r * kKeyTile;
            const auto [first, n] = seen[r];
            if constexpr (!Activation::kNormalizesRows) {
#pragma omp simd
              for (int64_t t = first; t < n; ++t) row[t] = act.prob(row[t], Acc(0));
            }
            if (dropout.active && n > first) {
              cpu::dropout_factors(dropout, bh * s.q_len + i0 + r0 + r, j0, n, keep.data());
#pragma omp simd
              for (int64_t t = first; t < n; ++t) row[t] *= keep[t];
            }
            // Keys before a window's row, after a causal or window row, padded rows.
            std::fill(row, row + first, Acc(0));
            std::fill(row + n, row + widest, Acc(0));
          }
          // Keys every row of the block sees go through the blocked product; at the band's edges each
          // row adds its own few, so that no row multiplies a value it must not see (0 * inf is NaN).
          int64_t shared_first = 0, shared_end = widest;
          if constexpr (kBanded) {
            shared_first = tile.visible_to(last_row, true).first;
            shared_end = std::max(tile.visible_to(i0 + r0, true).end, shared_first);
          }
          cpu::accumulate_rows_times_matrix(probs.data() + shared_first, kKeyTile, tile.v.data() + shared_first * dv,
                                            shared_end - shared_first, dv, acc.data() + r0 * dv, dv);
          if constexpr (kBanded) {
            for (int64_t r = 0; r < kRows && r0 + r < rows; ++r) {
              const Acc* row = probs.data() + r * kKeyTile;
              const auto [first, n] = tile.visible_to(i0 + r0 + r, true);
              for (int64_t t = first; t < n; ++t) {
                if (t >= shared_first && t < shared_end) continue;
                cpu::axpy(row[t], tile.v.data() + t * dv, acc.data() + (r0 + r) * dv, dv);
              }
            }
          }
        }
      }

      for (int64_t r = 0; r < rows; ++r) {
        T* out = cpu::row_ptr<T>(p.out, b, h, i0 + r);
        const Acc* acc_row = acc.data() + r * dv;
        if constexpr (Activation::kNormalizesRows) {
          const Acc row_sum = cpu::sum_of_lanes(row_sum_lanes.data() + r * cpu::kLanes);
          const bool any_key = row_sum > Acc(0);
          cpu::store(acc_row, any_key ? Acc(1) / row_sum : Acc(0), out, dv);
          lse[bh * s.q_len + i0 + r] = any_key ? row_max[r] + std::log(row_sum) : kNegInf;
        } else {
          cpu::store(acc_row, Acc(1), out, dv);
        }
      }
    }
  }
}

}  // namespace

void quadratic_attention_forward(const QuadraticParams& params) {
  dispatch_dtype(params.dtype, [&](auto types) {
    using T = typename decltype(types)::scalar_t;
    using Acc = typename decltype(types)::acc_t;
    dispatch_score_activation<Acc>(params.activation, [&](auto activation) {
      dispatch_bool(params.banded(), [&](auto banded) {
        forward_blocks<T, Acc, decltype(activation), decltype(banded)::value>(params, activation);
      });
    });
  });
}

}  // namespace ACTATTN_CPU_ISA
}  // namespace cpu
}  // namespace actattn
