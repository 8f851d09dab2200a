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

// A running (Dk x Dv) matrix and (Dk) vector sum, the state S, z of linear attention (or its gradient),
// grown one chunk at a time. Each chunk's terms are first summed on their own and then added, so the
// rounding error grows like C + N / C instead of N: in float32 this is what keeps the kernel within
// the error of torch's (pairwise-summing) composite.
template <typename Acc>
struct RunningState {
  int64_t qk_dim, v_dim;
  std::vector<Acc> kv, normalizer, chunk_kv, chunk_normalizer;

  RunningState(int64_t qk_dim_, int64_t v_dim_)
      : qk_dim(qk_dim_),
        v_dim(v_dim_),
        kv(qk_dim_ * v_dim_),
        normalizer(qk_dim_),
        chunk_kv(qk_dim_ * v_dim_),
        chunk_normalizer(qk_dim_) {}

  // Starts from slice bh of contiguous (B, H, Dk, Dv) and (B, H, Dk) tensors; null pointers mean zeros.
  void load(const void* kv_src, const void* normalizer_src, int64_t bh) {
    load_slice(kv_src, bh, kv);
    load_slice(normalizer_src, bh, normalizer);
  }

  void store(void* kv_dst, void* normalizer_dst, int64_t bh) const {
    std::copy(kv.begin(), kv.end(), static_cast<Acc*>(kv_dst) + bh * qk_dim * v_dim);
    std::copy(normalizer.begin(), normalizer.end(), static_cast<Acc*>(normalizer_dst) + bh * qk_dim);
  }

  // Adds sum_t left_t right_t^T to kv and sum_t left_t * weight_t to normalizer over `rows` rows
  // (left: rows x Dk, right: rows x Dv; a null weight means 1).
  void add_chunk(const Acc* left, const Acc* right, const Acc* weight, int64_t rows) {
    std::fill(chunk_kv.begin(), chunk_kv.end(), Acc(0));
    std::fill(chunk_normalizer.begin(), chunk_normalizer.end(), Acc(0));
    for (int64_t t = 0; t < rows; ++t) {
      const Acc* l = left + t * qk_dim;
      const Acc w = weight ? weight[t] : Acc(1);
      for (int64_t d = 0; d < qk_dim; ++d) {
        axpy(l[d], right + t * v_dim, chunk_kv.data() + d * v_dim, v_dim);
        chunk_normalizer[d] += l[d] * w;
      }
    }
    axpy(Acc(1), chunk_kv.data(), kv.data(), qk_dim * v_dim);
    axpy(Acc(1), chunk_normalizer.data(), normalizer.data(), qk_dim);
  }

 private:
  static void load_slice(const void* src, int64_t bh, std::vector<Acc>& dst) {
    if (src == nullptr) {
      std::fill(dst.begin(), dst.end(), Acc(0));
    } else {
      const Acc* from = static_cast<const Acc*>(src) + bh * static_cast<int64_t>(dst.size());
      std::copy(from, from + dst.size(), dst.begin());
    }
  }
};

// state += sum_t b_t v_t^T, normalizer += sum_t b_t over the chunk's keys.
template <typename Acc>
void absorb_keys(const LinearChunk<Acc>& c, RunningState<Acc>& state) {
  state.add_chunk(c.b.data(), c.v.data(), nullptr, c.rows);
}

// out (Dv) = a^T state, i.e. sum_d a[d] * state[d, :].
template <typename Acc>
void state_times_query(const Acc* a, const Acc* state, int64_t qk_dim, int64_t v_dim, Acc* out) {
  std::fill(out, out + v_dim, Acc(0));
  for (int64_t d = 0; d < qk_dim; ++d) axpy(a[d], state + d * v_dim, out, v_dim);
}

}  // namespace cpu
}  // namespace actattn
