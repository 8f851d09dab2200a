// Linear attention backward on the CPU, feature map derivative fused (phi'(x) from the raw input).
//
// With g_i = dL/do_i: dnum_i = g_i / den_i and dden_i = -(g_i . o_i) / den_i when normalising
// (dnum_i = g_i, dden_i = 0 otherwise). Then
//   da_i   = S_i dnum_i + z_i dden_i                                  (S_i, z_i: the state row i sees)
//   db_j   = dS_j v_j + dz_j,   dv_j = dS_j^T b_j,   with dS_j = dS_final + sum_{i sees j} a_i dnum_i^T
//   dq = scale * phi'(q) * da,  dk = phi'(k) * db,  d(initial state) = dS_final + sum_i a_i dnum_i^T.
// Causal, chunked like the forward: a forward sweep rebuilds S_i chunk by chunk for dq, a reverse sweep
// accumulates dS chunk by chunk for dk and dv; inside a chunk the masked C x C terms are summed directly.
// Non-causal: the full S for dq, the full dS for dk and dv.
// Memory: O(C (Dk + Dv) + Dk Dv) per thread; reads den_i and o_i saved by the forward, no per-position
// state. Each (batch, head) is owned by one thread, so gradients are deterministic.
#include <vector>

#include "../dispatch.h"
#include "cpu_kernels.h"
#include "linear_chunk.h"
#include "row_math.h"

namespace actattn {
namespace {

template <typename Acc>
struct OutputGrads {
  std::vector<Acc> num;  // C x Dv: dL/dnum_t
  std::vector<Acc> den;  // C: dL/dden_t
  explicit OutputGrads(int64_t v_dim) : num(cpu::kLinearChunk * v_dim), den(cpu::kLinearChunk) {}
};

template <typename T, typename Acc>
void load_output_grads(const LinearParams& p, int64_t b, int64_t h, int64_t start, int64_t rows,
                       OutputGrads<Acc>& g) {
  const int64_t dv = p.shape.v_dim;
  const Acc* denominators = static_cast<const Acc*>(p.denominator.data);
  for (int64_t t = 0; t < rows; ++t) {
    const T* grad_out = cpu::row_ptr<T>(p.grad_out, b, h, start + t);
    Acc* dnum = g.num.data() + t * dv;
    if (p.normalize) {
      const Acc den = denominators[(b * p.shape.heads + h) * p.shape.q_len + start + t];
      const T* out = cpu::row_ptr<T>(p.out, b, h, start + t);
      for (int64_t e = 0; e < dv; ++e) dnum[e] = Acc(grad_out[e]) / den;
      g.den[t] = -cpu::dot<Acc>(grad_out, out, dv) / den;
    } else {
      for (int64_t e = 0; e < dv; ++e) dnum[e] = Acc(grad_out[e]);
      g.den[t] = Acc(0);
    }
  }
}

// grad (Dk) = state (Dk x Dv) times vec (Dv) + normalizer * coef.
template <typename Acc>
void state_times_vector(const Acc* state, const Acc* vec, const Acc* normalizer, Acc coef, int64_t qk_dim,
                        int64_t v_dim, Acc* grad) {
  for (int64_t d = 0; d < qk_dim; ++d) grad[d] = cpu::dot<Acc>(state + d * v_dim, vec, v_dim) + normalizer[d] * coef;
}

template <typename T, typename Acc, typename Map>
void store_query_grad(const LinearParams& p, int64_t b, int64_t h, int64_t i, const Acc* grad_a) {
  const T* q = cpu::row_ptr<T>(p.q, b, h, i);
  T* dq = cpu::row_ptr<T>(p.grad_q, b, h, i);
  const Acc scale = Acc(p.scale);
  for (int64_t d = 0; d < p.shape.qk_dim; ++d) dq[d] = T(scale * Map::derivative(Acc(q[d])) * grad_a[d]);
}

template <typename T, typename Acc, typename Map>
void store_key_grad(const LinearParams& p, int64_t b, int64_t h, int64_t j, const Acc* grad_b) {
  const T* k = cpu::row_ptr<T>(p.k, b, h, j);
  T* dk = cpu::row_ptr<T>(p.grad_k, b, h, j);
  for (int64_t d = 0; d < p.shape.qk_dim; ++d) dk[d] = T(Map::derivative(Acc(k[d])) * grad_b[d]);
}

// dS += sum_t a_t dnum_t^T, dz += sum_t a_t dden_t over a chunk's query rows.
template <typename Acc>
void absorb_output_grads(const cpu::LinearChunk<Acc>& queries, const OutputGrads<Acc>& g,
                         cpu::RunningState<Acc>& grad_state) {
  grad_state.add_chunk(queries.a.data(), g.num.data(), g.den.data(), queries.rows);
}

template <typename T, typename Acc, typename Map, bool kCausal>
void backward_heads(const LinearParams& p) {
  const AttentionShape& s = p.shape;
  const int64_t dk = s.qk_dim, dv = s.v_dim;

#pragma omp parallel
  {
    cpu::RunningState<Acc> state(dk, dv), grad_state(dk, dv);
    std::vector<Acc> grad_a(dk), grad_b(dk), grad_v(dv);
    cpu::LinearChunk<Acc> queries(dk, dv), keys(dk, dv);
    OutputGrads<Acc> out_grads(dv);
#pragma omp for schedule(static)
    for (int64_t bh = 0; bh < s.batch * s.heads; ++bh) {
      const int64_t b = bh / s.heads, h = bh % s.heads;
      state.load(p.initial_state, p.initial_normalizer, bh);
      grad_state.load(p.grad_final_state, p.grad_final_normalizer, bh);

      if constexpr (kCausal) {
        // Forward sweep: dq from the state each row sees.
        for (int64_t start = 0; start < s.q_len; start += cpu::kLinearChunk) {
          const int64_t rows = std::min(cpu::kLinearChunk, s.q_len - start);
          cpu::load_queries<T, Acc, Map>(p, b, h, start, rows, queries);
          cpu::load_keys_values<T, Acc, Map>(p, b, h, start, rows, keys);
          load_output_grads<T, Acc>(p, b, h, start, rows, out_grads);
          for (int64_t t = 0; t < rows; ++t) {
            const Acc* dnum = out_grads.num.data() + t * dv;
            state_times_vector(state.kv.data(), dnum, state.normalizer.data(), out_grads.den[t], dk, dv, grad_a.data());
            for (int64_t u = 0; u <= t; ++u) {
              const Acc coef = cpu::dot<Acc>(keys.v_row(u, dv), dnum, dv) + out_grads.den[t];
              cpu::axpy(coef, keys.b_row(u, dk), grad_a.data(), dk);
            }
            store_query_grad<T, Acc, Map>(p, b, h, start + t, grad_a.data());
          }
          cpu::absorb_keys(keys, state);
        }
        // Reverse sweep: dk, dv from the gradient of every state that includes the key.
        const int64_t chunks = (s.k_len + cpu::kLinearChunk - 1) / cpu::kLinearChunk;
        for (int64_t chunk = chunks - 1; chunk >= 0; --chunk) {
          const int64_t start = chunk * cpu::kLinearChunk;
          const int64_t rows = std::min(cpu::kLinearChunk, s.k_len - start);
          cpu::load_queries<T, Acc, Map>(p, b, h, start, rows, queries);
          cpu::load_keys_values<T, Acc, Map>(p, b, h, start, rows, keys);
          load_output_grads<T, Acc>(p, b, h, start, rows, out_grads);
          for (int64_t u = 0; u < rows; ++u) {
            const Acc* bu = keys.b_row(u, dk);
            const Acc* vu = keys.v_row(u, dv);
            state_times_vector(grad_state.kv.data(), vu, grad_state.normalizer.data(), Acc(1), dk, dv,
                               grad_b.data());
            cpu::state_times_query(bu, grad_state.kv.data(), dk, dv, grad_v.data());
            for (int64_t t = u; t < rows; ++t) {
              const Acc* dnum = out_grads.num.data() + t * dv;
              const Acc* at = queries.a_row(t, dk);
              cpu::axpy(cpu::dot<Acc>(dnum, vu, dv) + out_grads.den[t], at, grad_b.data(), dk);
              cpu::axpy(cpu::dot<Acc>(at, bu, dk), dnum, grad_v.data(), dv);
            }
            store_key_grad<T, Acc, Map>(p, b, h, start + u, grad_b.data());
            cpu::store(grad_v.data(), Acc(1), cpu::row_ptr<T>(p.grad_v, b, h, start + u), dv);
          }
          absorb_output_grads(queries, out_grads, grad_state);
        }
      } else {
        for (int64_t start = 0; start < s.k_len; start += cpu::kLinearChunk) {
          const int64_t rows = std::min(cpu::kLinearChunk, s.k_len - start);
          cpu::load_keys_values<T, Acc, Map>(p, b, h, start, rows, keys);
          cpu::absorb_keys(keys, state);
        }
        for (int64_t start = 0; start < s.q_len; start += cpu::kLinearChunk) {
          const int64_t rows = std::min(cpu::kLinearChunk, s.q_len - start);
          cpu::load_queries<T, Acc, Map>(p, b, h, start, rows, queries);
          load_output_grads<T, Acc>(p, b, h, start, rows, out_grads);
          for (int64_t t = 0; t < rows; ++t) {
            state_times_vector(state.kv.data(), out_grads.num.data() + t * dv, state.normalizer.data(),
                               out_grads.den[t], dk, dv, grad_a.data());
            store_query_grad<T, Acc, Map>(p, b, h, start + t, grad_a.data());
          }
          absorb_output_grads(queries, out_grads, grad_state);
        }
        for (int64_t start = 0; start < s.k_len; start += cpu::kLinearChunk) {
          const int64_t rows = std::min(cpu::kLinearChunk, s.k_len - start);
          cpu::load_keys_values<T, Acc, Map>(p, b, h, start, rows, keys);
          for (int64_t u = 0; u < rows; ++u) {
            state_times_vector(grad_state.kv.data(), keys.v_row(u, dv), grad_state.normalizer.data(), Acc(1), dk,
                               dv, grad_b.data());
            cpu::state_times_query(keys.b_row(u, dk), grad_state.kv.data(), dk, dv, grad_v.data());
            store_key_grad<T, Acc, Map>(p, b, h, start + u, grad_b.data());
            cpu::store(grad_v.data(), Acc(1), cpu::row_ptr<T>(p.grad_v, b, h, start + u), dv);
          }
        }
      }
      grad_state.store(p.grad_initial_state, p.grad_initial_normalizer, bh);
    }
  }
}

}  // namespace

void linear_attention_backward_cpu(const LinearParams& params) {
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

}  // namespace actattn
