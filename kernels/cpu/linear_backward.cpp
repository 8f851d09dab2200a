// Linear attention backward on the CPU, feature map derivative fused (phi'(x) from the raw input).
//
// With g_i = dL/do_i: dnum_i = g_i / den_i and dden_i = -(g_i . o_i) / den_i when normalising
// (dnum_i = g_i, dden_i = 0 otherwise). Then
//   da_i   = S_i dnum_i + z_i dden_i                                  (S_i, z_i: the state row i sees)
// g_i . o_i is taken as a_i . (S_i dnum_i) from the rebuilt accumulation-type state, not from the saved
// output: that output is rounded to the input dtype, and the two terms of da_i nearly cancel when values
// have a non-zero mean, so a bf16 output made dq's error grow with N (2 % at 1k, 13 % at 64k).
//   db_j   = dS_j v_j + dz_j,   dv_j = dS_j^T b_j,   with dS_j = dS_final + sum_{i sees j} a_i dnum_i^T
//   dq = scale * phi'(q) * da,  dk = phi'(k) * db,  d(initial state) = dS_final + sum_i a_i dnum_i^T.
// Causal, chunked like the forward: a forward sweep rebuilds S_i chunk by chunk for dq, a reverse sweep
// accumulates dS chunk by chunk for dk and dv; the state terms of a chunk are chunk-by-matrix products,
// the masked C x C terms inside a chunk go through the same register-blocked products
// (cpu::causal_block_product). Non-causal: the full S for dq (the forward's final state when autograd
// passes it as saved_state, else rebuilt from the keys), the full dS for dk and dv.
// Memory: O(C (Dk + Dv) + Dk Dv) per thread, plus dden_i for one head's rows (causal: the forward sweep
// makes them, the reverse sweep reads them); reads den_i saved by the forward, not o_i; no per-position
// state. Each (batch, head) is owned by one thread, so gradients are deterministic.
// Only what is asked for (a null grad_q, or null grad_k and grad_v): without dq the da_i are still
// formed when normalising (dden feeds dk and the state's gradient) but not stored, and the whole
// forward sweep goes when not normalising; without dk, dv the key passes only absorb dS for the initial
// state's gradient. Either way the gradients computed are the same bits as when all are asked for.
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

template <typename T, typename Acc, typename Map, bool kCausal>
struct Backward {
  const LinearParams& p;
  const AttentionShape& s;
  const int64_t dk, dv;
  const bool wants_q, wants_kv;
  // da is needed for dq, and for dden when normalising.
  const bool forms_grad_a;

  cpu::RunningState<Acc> state, grad_state;
  cpu::LinearChunk<Acc> queries, keys;
  std::vector<Acc> grad_num, grad_den;  // dL/dnum_t (C x Dv), dL/dden_t (C)
  std::vector<Acc> grad_a, grad_b, grad_v;  // C x Dk, C x Dk, C x Dv
  std::vector<Acc> visible_normalizer;       // z_t of the query row being differentiated (Dk)
  std::vector<Acc> head_grad_den;            // causal: dL/dden of every row of the current head (q_len)
  // Causal: transposed right factors of the intra-chunk products and one register block of their scores.
  std::vector<Acc> v_t, grad_num_t, a_t, scores;  // Dv x C, Dv x C, Dk x C, kRows x C

  explicit Backward(const LinearParams& params)
      : p(params),
        s(params.shape),
        dk(s.qk_dim),
        dv(s.v_dim),
        wants_q(params.grad_q.data != nullptr),
        wants_kv(params.grad_k.data != nullptr),
        forms_grad_a(wants_q || params.normalize),
        state(dk, dv),
        grad_state(dk, dv),
        queries(dk, dv),
        keys(dk, dv),
        grad_num(cpu::kLinearChunk * dv),
        grad_den(cpu::kLinearChunk),
        grad_a(cpu::kLinearChunk * dk),
        grad_b(cpu::kLinearChunk * dk),
        grad_v(cpu::kLinearChunk * dv),
        visible_normalizer(dk),
        head_grad_den(kCausal && params.normalize ? s.q_len : 0),
        v_t(kCausal ? dv * cpu::kLinearChunk : 0),
        grad_num_t(kCausal ? dv * cpu::kLinearChunk : 0),
        a_t(kCausal ? dk * cpu::kLinearChunk : 0),
        scores(cpu::kRows * cpu::kLinearChunk) {}

  Acc denominator(int64_t b, int64_t h, int64_t row) const {
    return static_cast<const Acc*>(p.denominator.data)[(b * s.heads + h) * s.q_len + row];
  }

  // dnum_t of the chunk's rows; dden_t is made by query_grads (zero when not normalising).
  void load_output_grads(int64_t b, int64_t h, int64_t start, int64_t rows) {
    for (int64_t t = 0; t < rows; ++t) {
      const T* grad_out = cpu::row_ptr<T>(p.grad_out, b, h, start + t);
      Acc* dnum = grad_num.data() + t * dv;
      const Acc inv_den = p.normalize ? Acc(1) / denominator(b, h, start + t) : Acc(1);
      for (int64_t e = 0; e < dv; ++e) dnum[e] = Acc(grad_out[e]) * inv_den;
    }
    cpu::zero_padding_rows(grad_num, rows, dv);
    std::fill(grad_den.begin(), grad_den.end(), Acc(0));
  }

  // The reverse sweep's dden_t, as the forward sweep's query_grads made them.
  void load_saved_grad_den(int64_t start, int64_t rows) {
    if (p.normalize) std::copy_n(head_grad_den.begin() + start, rows, grad_den.begin());
  }

  // dq (and dden) for the chunk's query rows, from the state before the chunk (and, causal, the chunk's
  // keys): da_t = S_t dnum_t first, then dden_t = -a_t . da_t / den_t, then da_t += dden_t z_t.
  void query_grads(int64_t b, int64_t h, int64_t start) {
    const int64_t rows = queries.rows;
    cpu::chunk_times_matrix(grad_num.data(), rows, dv, state.transposed(), dk, grad_a.data());
    if constexpr (kCausal) {  // da_t += sum_{u <= t} (dnum_t . v_u) b_u
      cpu::transpose_chunk(keys.v.data(), rows, dv, v_t.data());
      for (int64_t r0 = 0; r0 < rows; r0 += cpu::kRows) {
        cpu::causal_block_product<true>(grad_num.data(), dv, v_t.data(), dv, static_cast<const Acc*>(nullptr),
                                        keys.b.data(), dk, r0, rows, scores.data(), grad_a.data(),
                                        static_cast<Acc*>(nullptr));
      }
    }
    std::copy(state.normalizer.begin(), state.normalizer.end(), visible_normalizer.begin());
    for (int64_t t = 0; t < rows; ++t) {
      Acc* da = grad_a.data() + t * dk;
      if constexpr (kCausal) cpu::axpy(Acc(1), keys.b_row(t, dk), visible_normalizer.data(), dk);
      if (p.normalize) {
        grad_den[t] = -cpu::dot<Acc>(queries.a_row(t, dk), da, dk) / denominator(b, h, start + t);
        cpu::axpy(grad_den[t], visible_normalizer.data(), da, dk);
        if constexpr (kCausal) head_grad_den[start + t] = grad_den[t];
      }
      if (!wants_q) continue;
      const T* q = cpu::row_ptr<T>(p.q, b, h, start + t);
      T* dq = cpu::row_ptr<T>(p.grad_q, b, h, start + t);
      const Acc scale = Acc(p.scale);
      for (int64_t d = 0; d < dk; ++d) dq[d] = T(scale * Map::grad(Acc(q[d]), da[d]));
    }
  }

  // dk, dv for the chunk's key rows, from the gradient of the state after the chunk (and, causal, the
  // chunk's queries).
  void key_grads(int64_t b, int64_t h, int64_t start) {
    const int64_t rows = keys.rows;
    const int64_t key_count = keys_of(p.key_lengths, b, s.k_len);
    cpu::chunk_times_matrix(keys.v.data(), rows, dv, grad_state.transposed(), dk, grad_b.data());
    cpu::chunk_times_matrix(keys.b.data(), rows, dk, grad_state.kv.data(), dv, grad_v.data());
    if constexpr (kCausal) {  // db_u += sum_{t >= u} (dnum_t . v_u + dden_t) a_t,  dv_u += sum_{t >= u} (a_t . b_u) dnum_t
      cpu::transpose_chunk(grad_num.data(), rows, dv, grad_num_t.data());
      cpu::transpose_chunk(queries.a.data(), rows, dk, a_t.data());
      for (int64_t u0 = 0; u0 < rows; u0 += cpu::kRows) {
        cpu::causal_block_product<false>(keys.v.data(), dv, grad_num_t.data(), dv, grad_den.data(), queries.a.data(),
                                         dk, u0, rows, scores.data(), grad_b.data(), static_cast<Acc*>(nullptr));
        cpu::causal_block_product<false>(keys.b.data(), dk, a_t.data(), dk, static_cast<const Acc*>(nullptr),
                                         grad_num.data(), dv, u0, rows, scores.data(), grad_v.data(),
                                         static_cast<Acc*>(nullptr));
      }
    }
    for (int64_t u = 0; u < rows; ++u) {
      Acc* db = grad_b.data() + u * dk;
      Acc* dvu = grad_v.data() + u * dv;
      cpu::axpy(Acc(1), grad_state.normalizer.data(), db, dk);
      const T* k = cpu::row_ptr<T>(p.k, b, h, start + u);
      T* dk_row = cpu::row_ptr<T>(p.grad_k, b, h, start + u);
      T* dv_row = cpu::row_ptr<T>(p.grad_v, b, h, start + u);
      if (start + u >= key_count) {  // padding keys get zero gradients
        std::fill(dk_row, dk_row + dk, T(0));
        std::fill(dv_row, dv_row + dv, T(0));
        continue;
      }
      for (int64_t d = 0; d < dk; ++d) dk_row[d] = T(Map::grad(Acc(k[d]), db[d]));
      cpu::store(dvu, Acc(1), dv_row, dv);
    }
  }

  // dS += sum_t a_t dnum_t^T, dz += sum_t a_t dden_t over the chunk's query rows.
  void absorb_output_grads() { grad_state.add_chunk(queries.a.data(), grad_num.data(), grad_den.data(), queries.rows); }

  void run_head(int64_t bh) {
    const int64_t b = bh / s.heads, h = bh % s.heads;
    state.load(p.initial_state, p.initial_normalizer, bh);
    grad_state.load(p.grad_final_state, p.grad_final_normalizer, bh);
    const int64_t C = cpu::kLinearChunk;

    if constexpr (kCausal) {
      for (int64_t start = 0; forms_grad_a && start < s.q_len; start += C) {  // forward sweep: dq, dden
        const int64_t rows = std::min(C, s.q_len - start);
        cpu::load_queries<T, Acc, Map>(p, b, h, start, rows, queries);
        cpu::load_keys_values<T, Acc, Map>(p, b, h, start, rows, keys);
        load_output_grads(b, h, start, rows);
        query_grads(b, h, start);
        cpu::absorb_keys(keys, state);
      }
      for (int64_t start = (s.k_len - 1) / C * C; start >= 0 && s.k_len > 0; start -= C) {  // reverse: dk, dv
        const int64_t rows = std::min(C, s.k_len - start);
        cpu::load_queries<T, Acc, Map>(p, b, h, start, rows, queries);
        load_output_grads(b, h, start, rows);
        load_saved_grad_den(start, rows);
        if (wants_kv) {
          cpu::load_keys_values<T, Acc, Map>(p, b, h, start, rows, keys);
          key_grads(b, h, start);
        }
        absorb_output_grads();
      }
    } else {
      // The state over all keys: the forward's when autograd saved it, else rebuilt from the keys (the
      // same chunks in the same order as the forward, so the same bits either way).
      if (p.saved_state != nullptr) {
        state.load(p.saved_state, p.saved_normalizer, bh);
      } else {
        for (int64_t start = 0; forms_grad_a && start < s.k_len; start += C) {
          cpu::load_keys_values<T, Acc, Map>(p, b, h, start, std::min(C, s.k_len - start), keys);
          cpu::absorb_keys(keys, state);
        }
      }
      for (int64_t start = 0; start < s.q_len; start += C) {
        const int64_t rows = std::min(C, s.q_len - start);
        cpu::load_queries<T, Acc, Map>(p, b, h, start, rows, queries);
        load_output_grads(b, h, start, rows);
        if (forms_grad_a) query_grads(b, h, start);
        absorb_output_grads();
      }
      for (int64_t start = 0; wants_kv && start < s.k_len; start += C) {
        cpu::load_keys_values<T, Acc, Map>(p, b, h, start, std::min(C, s.k_len - start), keys);
        key_grads(b, h, start);
      }
    }
    grad_state.store(p.grad_initial_state, p.grad_initial_normalizer, bh);
  }
};

template <typename T, typename Acc, typename Map, bool kCausal>
void backward_heads(const LinearParams& p) {
#pragma omp parallel
  {
    Backward<T, Acc, Map, kCausal> backward(p);
#pragma omp for schedule(static)
    for (int64_t bh = 0; bh < p.shape.batch * p.shape.heads; ++bh) backward.run_head(bh);
  }
}

}  // namespace

void linear_attention_backward(const LinearParams& params) {
  dispatch_dtype(params.dtype, [&](auto types) {
    using T = typename decltype(types)::scalar_t;
    using Acc = typename decltype(types)::acc_t;
    dispatch_feature_map(params.feature_map, [&](auto map) {
      dispatch_bool(params.causal, [&](auto causal) {
        backward_heads<T, Acc, decltype(map), decltype(causal)::value>(params);
      });
    });
  });
}

}  // namespace ACTATTN_CPU_ISA
}  // namespace cpu
}  // namespace actattn
