// Linear attention forward on the CPU, feature map phi fused (kernels/feature_maps.h).
//
// Causal, chunked (chunk C = kLinearChunk): per (batch, head) a running state S (Dk x Dv) and
// normaliser z (Dk) start from the initial state. For each chunk, every row t gets
//   num_t = a_t^T S + sum_{u <= t in chunk} (a_t . b_u) v_u,   den_t = a_t . z + sum_{u <= t} a_t . b_u + eps
// (inter-chunk as one chunk-by-state product, intra-chunk as a small masked quadratic), then the chunk
// is absorbed: S += sum_u b_u v_u^T, z += sum_u b_u. Time O(N Dk Dv + N C (Dk + Dv)).
// Non-causal: S and z are summed over all keys first, then num_i = a_i^T S, den_i = a_i . z + eps.
// Grouped-query heads: the query heads sharing a key/value head share its state, so one task takes
// several of them and builds the state once (absorbing each key chunk once, then every head's queries
// against it); the group is split across tasks only as far as needed to keep every thread busy. The
// sums run in the same order either way, so the results do not depend on the split.
// Memory: O(C (Dk + Dv) + Dk Dv) per thread; no per-position state is ever kept.
// Output: o_i = num_i / den_i when normalising, num_i otherwise; the final S and z.
// Saved for backward: den_i (batch * heads * q_len, when normalising) and the output; non-causal, also
// the final S and z (autograd passes them back as saved_state: the backward then skips rebuilding them).
#include <omp.h>

#include <algorithm>
#include <vector>

#include "../dispatch.h"
#include "cpu_kernels.h"
#include "linear_chunk.h"
#include "row_math.h"

namespace actattn {
namespace cpu {
inline namespace ACTATTN_CPU_ISA {
namespace {

// Query heads per task: the largest divisor of the group that still leaves a task for every thread.
int64_t heads_per_task(const AttentionShape& s, int64_t group) {
  const int64_t threads = omp_get_max_threads();
  int64_t span = group;
  while (span > 1 && (group % span != 0 || s.batch * s.heads / span < threads)) --span;
  return span;
}

template <typename T, typename Acc, typename Map, bool kCausal>
void forward_heads(const LinearParams& p) {
  const AttentionShape& s = p.shape;
  const int64_t dk = s.qk_dim, dv = s.v_dim;
  const Acc eps = Acc(p.eps);
  Acc* denominators = static_cast<Acc*>(p.denominator.data);
  const int64_t span = heads_per_task(s, p.k.head_group);

#pragma omp parallel
  {
    cpu::RunningState<Acc> state(dk, dv);
    cpu::LinearChunk<Acc> queries(dk, dv), keys(dk, dv);
    std::vector<Acc> num(cpu::kLinearChunk * dv);
    std::vector<Acc> weights(cpu::kRows * cpu::kLinearChunk);  // a_t . b_u for one register block of rows

    // Writes the chunk's outputs from num (inter-chunk part already in) and, when causal, adds the
    // intra-chunk terms first, kRows rows at a time: num += W V and den += row sums of W for the masked
    // W = A B^T (cpu::causal_block_product).
    auto finish_chunk = [&](int64_t b, int64_t h, int64_t start) {
      const int64_t rows = queries.rows;
      for (int64_t r0 = 0; r0 < rows; r0 += cpu::kRows) {
        Acc intra_den[cpu::kRows] = {};
        if constexpr (kCausal) {
          cpu::causal_block_product<true>(queries.a.data(), dk, keys.b_t.data(), dk, static_cast<const Acc*>(nullptr),
                                          keys.v.data(), dv, r0, rows, weights.data(), num.data(), intra_den);
        }
        for (int64_t r = 0; r < cpu::kRows && r0 + r < rows; ++r) {
          const int64_t i = start + r0 + r;
          const Acc den = cpu::dot<Acc>(queries.a_row(r0 + r, dk), state.normalizer.data(), dk) + intra_den[r] + eps;
          if (p.normalize) denominators[(b * s.heads + h) * s.q_len + i] = den;
          cpu::store(num.data() + (r0 + r) * dv, p.normalize ? Acc(1) / den : Acc(1), cpu::row_ptr<T>(p.out, b, h, i), dv);
        }
      }
    };

#pragma omp for schedule(static)
    for (int64_t task = 0; task < s.batch * s.heads / span; ++task) {
      // Query heads [h0, h0 + span) of batch b, all served by one key/value head. The runner gave every
      // query head its own copy of the (shared) initial state; the first one's is read.
      const int64_t bh0 = task * span, b = bh0 / s.heads, h0 = bh0 % s.heads;
      state.load(p.initial_state, p.initial_normalizer, bh0);
      if (!kCausal) {
        for (int64_t start = 0; start < s.k_len; start += cpu::kLinearChunk) {
          cpu::load_keys_values<T, Acc, Map>(p, b, h0, start, std::min(cpu::kLinearChunk, s.k_len - start), keys);
          cpu::absorb_keys(keys, state);
        }
      }
      for (int64_t start = 0; start < s.q_len; start += cpu::kLinearChunk) {
        const int64_t rows = std::min(cpu::kLinearChunk, s.q_len - start);
        if constexpr (kCausal) {
          cpu::load_keys_values<T, Acc, Map>(p, b, h0, start, rows, keys);
          keys.transpose_b(dk);
        }
        for (int64_t h = h0; h < h0 + span; ++h) {
          cpu::load_queries<T, Acc, Map>(p, b, h, start, rows, queries);
          cpu::chunk_times_matrix(queries.a.data(), rows, dk, state.kv.data(), dv, num.data());
          finish_chunk(b, h, start);
        }
        if constexpr (kCausal) cpu::absorb_keys(keys, state);
      }
      for (int64_t bh = bh0; bh < bh0 + span; ++bh) state.store(p.final_state, p.final_normalizer, bh);
    }
  }
}

}  // namespace

void linear_attention_forward(const LinearParams& params) {
  dispatch_dtype(params.dtype, [&](auto types) {
    using T = typename decltype(types)::scalar_t;
    using Acc = typename decltype(types)::acc_t;
    dispatch_feature_map(params.feature_map, [&](auto map) {
      dispatch_bool(params.causal, [&](auto causal) {
        forward_heads<T, Acc, decltype(map), decltype(causal)::value>(params);
      });
    });
  });
}

}  // namespace ACTATTN_CPU_ISA
}  // namespace cpu
}  // namespace actattn
