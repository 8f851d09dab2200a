// The float64 reference of the emulated linear-attention kernel tests (tests/emulation/linear_*.cpp):
// outputs, denominators, final state and every gradient by the direct O(N^2) sums (no chunks, no
// states), from the same rounded inputs the kernels read, for any head dims Dk and Dv.
#pragma once

#include <cmath>
#include <cstdint>
#include <vector>

#include "../../kernels/params.h"
#include "emulated_tensors.h"

namespace actattn {
namespace emulation_test {

struct LinearProblem {
  int64_t batch, heads, q_len, k_len, qk_dim, v_dim;
  FeatureMapKind map;
  bool causal, normalize;
  bool with_state;  // initial state and gradients into the final state
};

inline double map_value(FeatureMapKind map, double x) {
  if (map == FeatureMapKind::kRelu) return x > 0 ? x : 0;
  if (map == FeatureMapKind::kElu) return x > 0 ? x + 1 : std::exp(x);
  return x;
}

inline double map_derivative(FeatureMapKind map, double x) {
  if (map == FeatureMapKind::kRelu) return x > 0 ? 1 : 0;
  if (map == FeatureMapKind::kElu) return x > 0 ? 1 : std::exp(x);
  return 1;
}

// Per (batch, head): the initial state (Dk x Dv) and normaliser (Dk), and the gradients into the final
// ones, in the kernels' accumulation type.
template <typename Acc>
struct LinearStates {
  std::vector<Acc> s0, z0, ds_final, dz_final;
};

struct LinearReference {
  std::vector<double> out, den, dq, dk, dv, s_final, z_final, ds0, dz0;
};

// saved_out: the output as the forward stored it (rounded to T), from which dk's dden is formed, as
// FlashAttention's delta is: its rounding is part of the backward's input, not of its error. dq's too
// unless dq_from_exact_output, as the tensor-core kernels (and the CPU's) form it from the float32 state:
// there z_i times o_i's rounding would swamp da_i when the values share a mean. The generic CUDA
// kernels read the saved output for both.
template <typename T, typename Acc>
LinearReference linear_reference(const LinearProblem& c, const EmulatedTensor<T>& q, const EmulatedTensor<T>& k,
                                 const EmulatedTensor<T>& v, const EmulatedTensor<T>& dout, const LinearStates<Acc>& st,
                                 const std::vector<int64_t>& lengths, double scale, double eps,
                                 const EmulatedTensor<T>& saved_out, bool dq_from_exact_output) {
  const int64_t Dk = c.qk_dim, Dv = c.v_dim, Nq = c.q_len, Nk = c.k_len;
  LinearReference r;
  r.out.assign(c.batch * c.heads * Nq * Dv, 0);
  r.den.assign(c.batch * c.heads * Nq, 0);
  r.dq.assign(c.batch * c.heads * Nq * Dk, 0);
  r.dk.assign(c.batch * c.heads * Nk * Dk, 0);
  r.dv.assign(c.batch * c.heads * Nk * Dv, 0);
  r.s_final.assign(c.batch * c.heads * Dk * Dv, 0);
  r.ds0 = r.s_final;
  r.z_final.assign(c.batch * c.heads * Dk, 0);
  r.dz0 = r.z_final;
  for (int64_t b = 0; b < c.batch; ++b) {
    const int64_t keys = lengths[b];
    for (int64_t h = 0; h < c.heads; ++h) {
      const int64_t bh = b * c.heads + h;
      auto s0 = [&](int64_t d, int64_t e) { return c.with_state ? double(st.s0[(bh * Dk + d) * Dv + e]) : 0.0; };
      auto z0 = [&](int64_t d) { return c.with_state ? double(st.z0[bh * Dk + d]) : 0.0; };
      auto dsf = [&](int64_t d, int64_t e) {
        return c.with_state ? double(st.ds_final[(bh * Dk + d) * Dv + e]) : 0.0;
      };
      auto dzf = [&](int64_t d) { return c.with_state ? double(st.dz_final[bh * Dk + d]) : 0.0; };
      std::vector<double> a(Nq * Dk), bk(Nk * Dk, 0.0);
      for (int64_t i = 0; i < Nq; ++i)
        for (int64_t d = 0; d < Dk; ++d) a[i * Dk + d] = scale * map_value(c.map, q.at(b, h, i, d));
      for (int64_t j = 0; j < keys; ++j)
        for (int64_t d = 0; d < Dk; ++d) bk[j * Dk + d] = map_value(c.map, k.at(b, h, j, d));
      auto sees = [&](int64_t i, int64_t j) { return j < keys && (!c.causal || j <= i); };
      auto dot_ab = [&](int64_t i, int64_t j) {
        double x = 0;
        for (int64_t d = 0; d < Dk; ++d) x += a[i * Dk + d] * bk[j * Dk + d];
        return x;
      };
      std::vector<double> dnum(Nq * Dv), dden(Nq), dden_for_dq(Nq);
      std::vector<double> da(Nq * Dk, 0.0), db(Nk * Dk, 0.0), dv(Nk * Dv, 0.0);
      for (int64_t i = 0; i < Nq; ++i) {
        std::vector<double> num(Dv, 0.0);
        double den = eps;
        for (int64_t d = 0; d < Dk; ++d) {
          den += a[i * Dk + d] * z0(d);
          for (int64_t e = 0; e < Dv; ++e) num[e] += a[i * Dk + d] * s0(d, e);
        }
        for (int64_t j = 0; j < Nk; ++j) {
          if (!sees(i, j)) continue;
          const double w = dot_ab(i, j);
          den += w;
          for (int64_t e = 0; e < Dv; ++e) num[e] += w * v.at(b, h, j, e);
        }
        r.den[bh * Nq + i] = den;
        double g_dot_saved_o = 0, g_dot_o = 0;
        for (int64_t e = 0; e < Dv; ++e) {
          const double o = c.normalize ? num[e] / den : num[e];
          r.out[(bh * Nq + i) * Dv + e] = o;
          dnum[i * Dv + e] = c.normalize ? dout.at(b, h, i, e) / den : dout.at(b, h, i, e);
          g_dot_saved_o += dnum[i * Dv + e] * (c.normalize ? saved_out.at(b, h, i, e) : o);
          g_dot_o += dnum[i * Dv + e] * o;
        }
        dden[i] = c.normalize ? -g_dot_saved_o : 0.0;
        dden_for_dq[i] = c.normalize ? -(dq_from_exact_output ? g_dot_o : g_dot_saved_o) : 0.0;
      }
      for (int64_t i = 0; i < Nq; ++i) {
        for (int64_t d = 0; d < Dk; ++d) {
          double x = z0(d) * dden_for_dq[i];
          for (int64_t e = 0; e < Dv; ++e) x += s0(d, e) * dnum[i * Dv + e];
          da[i * Dk + d] = x;
        }
        for (int64_t j = 0; j < Nk; ++j) {
          if (!sees(i, j)) continue;
          double g_dot_v = 0;  // m = dnum_i . v_j + dden_i
          for (int64_t e = 0; e < Dv; ++e) g_dot_v += dnum[i * Dv + e] * v.at(b, h, j, e);
          const double w = dot_ab(i, j);
          for (int64_t d = 0; d < Dk; ++d) {
            da[i * Dk + d] += (g_dot_v + dden_for_dq[i]) * bk[j * Dk + d];
            db[j * Dk + d] += (g_dot_v + dden[i]) * a[i * Dk + d];
          }
          for (int64_t e = 0; e < Dv; ++e) dv[j * Dv + e] += w * dnum[i * Dv + e];
        }
      }
      for (int64_t j = 0; j < keys; ++j) {
        for (int64_t d = 0; d < Dk; ++d) {
          double x = dzf(d);
          for (int64_t e = 0; e < Dv; ++e) x += dsf(d, e) * v.at(b, h, j, e);
          db[j * Dk + d] += x;
        }
        for (int64_t e = 0; e < Dv; ++e) {
          double y = 0;
          for (int64_t d = 0; d < Dk; ++d) y += dsf(d, e) * bk[j * Dk + d];
          dv[j * Dv + e] += y;
        }
      }
      for (int64_t d = 0; d < Dk; ++d) {
        double z = z0(d), dz = dzf(d);
        for (int64_t j = 0; j < keys; ++j) z += bk[j * Dk + d];
        for (int64_t i = 0; i < Nq; ++i) dz += a[i * Dk + d] * dden[i];
        r.z_final[bh * Dk + d] = z;
        r.dz0[bh * Dk + d] = dz;
        for (int64_t e = 0; e < Dv; ++e) {
          double s = s0(d, e), ds = dsf(d, e);
          for (int64_t j = 0; j < keys; ++j) s += bk[j * Dk + d] * v.at(b, h, j, e);
          for (int64_t i = 0; i < Nq; ++i) ds += a[i * Dk + d] * dnum[i * Dv + e];
          r.s_final[(bh * Dk + d) * Dv + e] = s;
          r.ds0[(bh * Dk + d) * Dv + e] = ds;
        }
      }
      for (int64_t i = 0; i < Nq; ++i)
        for (int64_t d = 0; d < Dk; ++d)
          r.dq[(bh * Nq + i) * Dk + d] = scale * map_derivative(c.map, q.at(b, h, i, d)) * da[i * Dk + d];
      for (int64_t j = 0; j < keys; ++j) {
        for (int64_t d = 0; d < Dk; ++d)
          r.dk[(bh * Nk + j) * Dk + d] = map_derivative(c.map, k.at(b, h, j, d)) * db[j * Dk + d];
        for (int64_t e = 0; e < Dv; ++e) r.dv[(bh * Nk + j) * Dv + e] = dv[j * Dv + e];
      }
    }
  }
  return r;
}

// max |got - want| / max |want| over a state or vector (infinite if got has a NaN or inf).
template <typename Acc>
double vector_error(const std::vector<Acc>& got, const std::vector<double>& want) {
  double err = 0, norm = 1e-30;
  for (size_t i = 0; i < got.size(); ++i) {
    if (!std::isfinite(double(got[i]))) return INFINITY;
    err = std::max(err, std::abs(double(got[i]) - want[i]));
    norm = std::max(norm, std::abs(want[i]));
  }
  return err / norm;
}

}  // namespace emulation_test
}  // namespace actattn
