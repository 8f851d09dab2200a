// One chunk of C consecutive rows of linear attention, loaded into accumulation-type buffers with the
// feature map applied: a_t = scale * phi(q_t), b_t = phi(k_t), v_t. Shared by forward and backward.
#pragma once

#include <algorithm>
#include <vector>

#include "../params.h"
#include "row_math.h"

namespace actattn {
namespace cpu {

constexpr int64_t kLinearChunk = 64;

template <typename Acc>
struct LinearChunk {
  int64_t rows = 0;
  std::vector<Acc> a, b, v;  // rows x Dk, rows x Dk, rows x Dv

  LinearChunk(int64_t qk_dim, int64_t v_dim)
      : a(kLinearChunk * qk_dim), b(kLinearChunk * qk_dim), v(kLinearChunk * v_dim) {}

  const Acc* a_row(int64_t t, int64_t qk_dim) const { return a.data() + t * qk_dim; }
  const Acc* b_row(int64_t t, int64_t qk_dim) const { return b.data() + t * qk_dim; }
  const Acc* v_row(int64_t t, int64_t v_dim) const { return v.data() + t * v_dim; }
};

// Loads phi-mapped queries of rows [start, start + rows) into chunk.a.
template <typename T, typename Acc, typename Map>
void load_queries(const LinearParams& p, int64_t b, int64_t h, int64_t start, int64_t rows, LinearChunk<Acc>& c) {
  const int64_t dk = p.shape.qk_dim;
  const Acc scale = Acc(p.scale);
  c.rows = rows;
  for (int64_t t = 0; t < rows; ++t) {
    const T* q = row_ptr<T>(p.q, b, h, start + t);
    for (int64_t d = 0; d < dk; ++d) c.a[t * dk + d] = scale * Map::value(Acc(q[d]));
  }
}

// Loads phi-mapped keys and values of rows [start, start + rows) into chunk.b and chunk.v.
template <typename T, typename Acc, typename Map>
void load_keys_values(const LinearParams& p, int64_t b, int64_t h, int64_t start, int64_t rows,
                      LinearChunk<Acc>& c) {
  const int64_t dk = p.shape.qk_dim, dv = p.shape.v_dim;
  c.rows = rows;
  for (int64_t t = 0; t < rows; ++t) {
    const T* k = row_ptr<T>(p.k, b, h, start + t);
    const T* v = row_ptr<T>(p.v, b, h, start + t);
    for (int64_t d = 0; d < dk; ++d) c.b[t * dk + d] = Map::value(Acc(k[d]));
    for (int64_t e = 0; e < dv; ++e) c.v[t * dv + e] = Acc(v[e]);
  }
}

// state (Dk x Dv) += sum_t b_t v_t^T and normalizer (Dk) += sum_t b_t over the chunk's rows.
template <typename Acc>
void absorb_keys(const LinearChunk<Acc>& c, int64_t qk_dim, int64_t v_dim, Acc* state, Acc* normalizer) {
  for (int64_t t = 0; t < c.rows; ++t) {
    const Acc* bt = c.b_row(t, qk_dim);
    const Acc* vt = c.v_row(t, v_dim);
    for (int64_t d = 0; d < qk_dim; ++d) {
      axpy(bt[d], vt, state + d * v_dim, v_dim);
      normalizer[d] += bt[d];
    }
  }
}

// out (Dv) = a^T state, i.e. sum_d a[d] * state[d, :].
template <typename Acc>
void state_times_query(const Acc* a, const Acc* state, int64_t qk_dim, int64_t v_dim, Acc* out) {
  std::fill(out, out + v_dim, Acc(0));
  for (int64_t d = 0; d < qk_dim; ++d) axpy(a[d], state + d * v_dim, out, v_dim);
}

// Copies a (batch, head) slice of a contiguous state tensor, or zeros when the tensor is absent.
template <typename Acc>
void load_state(const void* src, int64_t bh, int64_t size, Acc* dst) {
  if (src == nullptr) {
    std::fill(dst, dst + size, Acc(0));
  } else {
    const Acc* from = static_cast<const Acc*>(src) + bh * size;
    std::copy(from, from + size, dst);
  }
}

template <typename Acc>
void store_state(const Acc* src, int64_t bh, int64_t size, void* dst) {
  std::copy(src, src + size, static_cast<Acc*>(dst) + bh * size);
}

}  // namespace cpu
}  // namespace actattn
