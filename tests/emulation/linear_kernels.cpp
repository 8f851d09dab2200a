// The tensor-core linear attention kernels (kernels/cuda/linear_*_tc.cuh), compiled by the host compiler
// and run on the CPU through kernels/cuda/warp_emulation.h, against a float64 reference computed here
// from the same rounded inputs by the direct O(N^2) sums (no chunks, no states), so the chunked
// algorithm, its masks, the state carried between chunks and the gradient formulas are all checked.
// Not covered: timing, races the emulation's barriers hide, the hardware's rounding order.
//
// Usage: actattn_linear_emulation [case-filter substring]; exits 1 if any case fails.
#define ACTATTN_WARP_EMULATION
#include "../../kernels/cuda/warp_emulation.h"
// clang-format off
#include "../../kernels/feature_maps.h"
#include "../../kernels/cuda/linear_forward_tc.cuh"
#include "../../kernels/cuda/linear_backward_tc.cuh"
#include "emulated_tensors.h"
// clang-format on

#include <cmath>
#include <cstring>
#include <cstdio>
#include <string>
#include <vector>

namespace {

using actattn::AttentionShape;
using actattn::FeatureMapKind;
using actattn::LinearParams;
using actattn::emulation_test::random_tensor;
using actattn::emulation_test::relative_error;
using actattn::emulation_test::Tensor16;

struct Case {
  int64_t batch, heads, q_len, k_len, dim;
  FeatureMapKind map;
  bool causal, normalize;
  bool with_state;   // initial state and gradients into the final state
  bool padded;       // key_lengths shorter than k_len for some sequences
  bool interleaved;  // (B, N, H, D) memory viewed as (B, H, N, D)
  bool half;         // float16 instead of bfloat16
  float value_mean = 0.f;  // added to v: states that grow past float16's range with N

  std::string name() const {
    const char* maps[] = {"identity", "relu", "elu"};
    char buf[200];
    std::snprintf(buf, sizeof buf, "%s %s%s%s%s%s%s B%lld H%lld Nq%lld Nk%lld D%lld%s", half ? "fp16" : "bf16",
                  maps[static_cast<int>(map)], causal ? " causal" : "", normalize ? " norm" : "",
                  with_state ? " state" : "", padded ? " padded" : "", interleaved ? " interleaved" : "",
                  (long long)batch, (long long)heads, (long long)q_len, (long long)k_len, (long long)dim,
                  value_mean != 0.f ? (" v+" + std::to_string(static_cast<int>(value_mean))).c_str() : "");
    return buf;
  }
};

double map_value(FeatureMapKind map, double x) {
  if (map == FeatureMapKind::kRelu) return x > 0 ? x : 0;
  if (map == FeatureMapKind::kElu) return x > 0 ? x + 1 : std::exp(x);
  return x;
}

double map_derivative(FeatureMapKind map, double x) {
  if (map == FeatureMapKind::kRelu) return x > 0 ? 1 : 0;
  if (map == FeatureMapKind::kElu) return x > 0 ? 1 : std::exp(x);
  return 1;
}

// Per (batch, head): the initial state and normaliser, and the gradients into the final ones.
struct States {
  std::vector<float> s0, z0, ds_final, dz_final;
};

struct Reference {
  std::vector<double> out, den, dq, dk, dv, s_final, z_final, ds0, dz0;
};

template <typename T>
Reference reference(const Case& c, const Tensor16<T>& q, const Tensor16<T>& k, const Tensor16<T>& v,
                    const Tensor16<T>& dout, const States& st, const std::vector<int64_t>& lengths, double scale,
                    double eps, const Tensor16<T>& saved_out) {
  const int64_t D = c.dim, Nq = c.q_len, Nk = c.k_len;
  Reference r;
  r.out.assign(c.batch * c.heads * Nq * D, 0);
  r.den.assign(c.batch * c.heads * Nq, 0);
  r.dq.assign(r.out.size(), 0);
  r.dk.assign(c.batch * c.heads * Nk * D, 0);
  r.dv.assign(r.dk.size(), 0);
  r.s_final.assign(c.batch * c.heads * D * D, 0);
  r.ds0 = r.s_final;
  r.z_final.assign(c.batch * c.heads * D, 0);
  r.dz0 = r.z_final;
  for (int64_t b = 0; b < c.batch; ++b) {
    const int64_t keys = lengths[b];
    for (int64_t h = 0; h < c.heads; ++h) {
      const int64_t bh = b * c.heads + h;
      auto s0 = [&](int64_t d, int64_t e) { return c.with_state ? double(st.s0[(bh * D + d) * D + e]) : 0.0; };
      auto z0 = [&](int64_t d) { return c.with_state ? double(st.z0[bh * D + d]) : 0.0; };
      auto dsf = [&](int64_t d, int64_t e) { return c.with_state ? double(st.ds_final[(bh * D + d) * D + e]) : 0.0; };
      auto dzf = [&](int64_t d) { return c.with_state ? double(st.dz_final[bh * D + d]) : 0.0; };
      std::vector<double> a(Nq * D), bk(Nk * D, 0.0);
      for (int64_t i = 0; i < Nq; ++i)
        for (int64_t d = 0; d < D; ++d) a[i * D + d] = scale * map_value(c.map, q.at(b, h, i, d));
      for (int64_t j = 0; j < keys; ++j)
        for (int64_t d = 0; d < D; ++d) bk[j * D + d] = map_value(c.map, k.at(b, h, j, d));
      auto sees = [&](int64_t i, int64_t j) { return j < keys && (!c.causal || j <= i); };
      auto dot_ab = [&](int64_t i, int64_t j) {
        double x = 0;
        for (int64_t d = 0; d < D; ++d) x += a[i * D + d] * bk[j * D + d];
        return x;
      };
      std::vector<double> dnum(Nq * D), dden(Nq);
      std::vector<double> da(Nq * D, 0.0), db(Nk * D, 0.0), dv(Nk * D, 0.0);
      for (int64_t i = 0; i < Nq; ++i) {
        std::vector<double> num(D, 0.0);
        double den = eps;
        for (int64_t d = 0; d < D; ++d) {
          den += a[i * D + d] * z0(d);
          for (int64_t e = 0; e < D; ++e) num[e] += a[i * D + d] * s0(d, e);
        }
        for (int64_t j = 0; j < Nk; ++j) {
          if (!sees(i, j)) continue;
          const double w = dot_ab(i, j);
          den += w;
          for (int64_t e = 0; e < D; ++e) num[e] += w * v.at(b, h, j, e);
        }
        r.den[bh * Nq + i] = den;
        double g_dot_o = 0;
        for (int64_t e = 0; e < D; ++e) {
          const double o = c.normalize ? num[e] / den : num[e];
          r.out[(bh * Nq + i) * D + e] = o;
          dnum[i * D + e] = c.normalize ? dout.at(b, h, i, e) / den : dout.at(b, h, i, e);
          // The backward's dden takes o as the forward saved it, rounded to 16 bits, as FlashAttention's
          // delta does: its rounding is part of the backward's input, not of its error.
          g_dot_o += dnum[i * D + e] * (c.normalize ? saved_out.at(b, h, i, e) : o);
        }
        dden[i] = c.normalize ? -g_dot_o : 0.0;
      }
      for (int64_t i = 0; i < Nq; ++i) {
        for (int64_t d = 0; d < D; ++d) {
          double x = z0(d) * dden[i];
          for (int64_t e = 0; e < D; ++e) x += s0(d, e) * dnum[i * D + e];
          da[i * D + d] = x;
        }
        for (int64_t j = 0; j < Nk; ++j) {
          if (!sees(i, j)) continue;
          double m = dden[i];  // dnum_i . v_j + dden_i
          for (int64_t e = 0; e < D; ++e) m += dnum[i * D + e] * v.at(b, h, j, e);
          const double w = dot_ab(i, j);
          for (int64_t d = 0; d < D; ++d) {
            da[i * D + d] += m * bk[j * D + d];
            db[j * D + d] += m * a[i * D + d];
            dv[j * D + d] += w * dnum[i * D + d];
          }
        }
      }
      for (int64_t j = 0; j < keys; ++j) {
        for (int64_t d = 0; d < D; ++d) {
          double x = dzf(d), y = 0;
          for (int64_t e = 0; e < D; ++e) {
            x += dsf(d, e) * v.at(b, h, j, e);
            y += dsf(e, d) * bk[j * D + e];
          }
          db[j * D + d] += x;
          dv[j * D + d] += y;
        }
      }
      for (int64_t d = 0; d < D; ++d) {
        double z = z0(d), dz = dzf(d);
        for (int64_t j = 0; j < keys; ++j) z += bk[j * D + d];
        for (int64_t i = 0; i < Nq; ++i) dz += a[i * D + d] * dden[i];
        r.z_final[bh * D + d] = z;
        r.dz0[bh * D + d] = dz;
        for (int64_t e = 0; e < D; ++e) {
          double s = s0(d, e), ds = dsf(d, e);
          for (int64_t j = 0; j < keys; ++j) s += bk[j * D + d] * v.at(b, h, j, e);
          for (int64_t i = 0; i < Nq; ++i) ds += a[i * D + d] * dnum[i * D + e];
          r.s_final[(bh * D + d) * D + e] = s;
          r.ds0[(bh * D + d) * D + e] = ds;
        }
      }
      for (int64_t i = 0; i < Nq; ++i)
        for (int64_t d = 0; d < D; ++d)
          r.dq[(bh * Nq + i) * D + d] = scale * map_derivative(c.map, q.at(b, h, i, d)) * da[i * D + d];
      for (int64_t j = 0; j < keys; ++j)
        for (int64_t d = 0; d < D; ++d) {
          r.dk[(bh * Nk + j) * D + d] = map_derivative(c.map, k.at(b, h, j, d)) * db[j * D + d];
          r.dv[(bh * Nk + j) * D + d] = dv[j * D + d];
        }
    }
  }
  return r;
}

double vector_error(const std::vector<float>& got, const std::vector<double>& want) {
  double err = 0, norm = 1e-30;
  for (size_t i = 0; i < got.size(); ++i) {
    if (!std::isfinite(got[i])) return INFINITY;
    err = std::max(err, std::abs(got[i] - want[i]));
    norm = std::max(norm, std::abs(want[i]));
  }
  return err / norm;
}

template <typename T, int kD, typename Map, bool kCausal>
void run_kernels(const Case& c, LinearParams& p, bool backward) {
  using namespace actattn::cuda;
  const unsigned bh = static_cast<unsigned>(c.batch * c.heads);
  if (backward) {
    constexpr int threads = linear_tc::Shape<kD>::kThreads;
    emulation::launch(dim3(bh, 2), threads, [&] { linear_backward_tc::backward_kernel<T, Map, kCausal, kD>(p); });
    return;
  }
  // The forward's three launches, as linear_forward_tc.cu makes them. The workspace starts as NaN: the
  // kernels must write every entry they read.
  namespace fwd = linear_forward_tc;
  const fwd::Plan plan(p);
  std::vector<float> workspace(plan.workspace_elems(), NAN);
  p.workspace = workspace.data();
  float* ws = workspace.data();
  emulation::launch(plan.states_grid(), fwd::kThreads, [&] { fwd::chunk_states_kernel<T, Map, kD, kD>(p, ws); });
  emulation::launch(plan.prefix_grid(), fwd::kThreads, [&] { fwd::prefix_states_kernel(p, ws); });
  emulation::launch(plan.outputs_grid(), fwd::kThreads,
                    [&] { fwd::chunk_outputs_kernel<T, Map, kCausal, kD, kD>(p, ws); });
  p.workspace = nullptr;
}

template <typename T, int kD>
bool check_case(const Case& c, std::mt19937& gen) {
  auto q = random_tensor<T>(c.batch, c.heads, c.q_len, kD, c.interleaved, gen);
  auto k = random_tensor<T>(c.batch, c.heads, c.k_len, kD, c.interleaved, gen);
  auto v = random_tensor<T>(c.batch, c.heads, c.k_len, kD, c.interleaved, gen);
  for (T& x : v.data) x = T(static_cast<float>(x) + c.value_mean);
  auto dout = random_tensor<T>(c.batch, c.heads, c.q_len, kD, c.interleaved, gen);
  Tensor16<T> out(c.batch, c.heads, c.q_len, kD, c.interleaved), dq = out;
  Tensor16<T> dk(c.batch, c.heads, c.k_len, kD, c.interleaved), dv = dk;
  // Padding keys hold NaN: they must never reach a product.
  std::vector<int64_t> lengths(c.batch, c.k_len);
  if (c.padded) {
    for (int64_t b = 0; b < c.batch; ++b) lengths[b] = (b * 37 + c.k_len / 2) % (c.k_len + 1);
    lengths[0] = 0;
    for (int64_t b = 0; b < c.batch; ++b)
      for (int64_t h = 0; h < c.heads; ++h)
        for (int64_t j = lengths[b]; j < c.k_len; ++j)
          for (int64_t d = 0; d < kD; ++d) k.data[k.offset(b, h, j) + d] = v.data[v.offset(b, h, j) + d] = T(NAN);
  }
  const int64_t bh = c.batch * c.heads;
  States st;
  std::normal_distribution<float> normal;
  for (auto* x : {&st.s0, &st.ds_final}) {
    x->resize(bh * kD * kD);
    for (float& e : *x) e = normal(gen);
  }
  // A positive initial normaliser, as a real one is under relu and elu+1, keeps den away from zero.
  for (auto* x : {&st.z0, &st.dz_final}) {
    x->resize(bh * kD);
    for (float& e : *x) e = x == &st.z0 ? 4.f * std::abs(normal(gen)) : normal(gen);
  }
  const double scale = 1.0 / std::sqrt(double(kD)), eps = 1e-6;

  std::vector<float> den(bh * c.q_len), s_final(bh * kD * kD), z_final(bh * kD), ds0(s_final.size()),
      dz0(z_final.size());
  LinearParams p;
  p.feature_map = c.map;
  p.causal = c.causal;
  p.normalize = c.normalize;
  p.shape = AttentionShape{c.batch, c.heads, c.q_len, c.k_len, kD, kD};
  p.scale = scale;
  p.eps = eps;
  p.key_lengths = c.padded ? lengths.data() : nullptr;
  p.q = q.view();
  p.k = k.view();
  p.v = v.view();
  p.out = out.view();
  if (c.with_state) {
    p.initial_state = st.s0.data();
    p.initial_normalizer = st.z0.data();
    p.grad_final_state = st.ds_final.data();
    p.grad_final_normalizer = st.dz_final.data();
  }
  p.final_state = s_final.data();
  p.final_normalizer = z_final.data();
  p.denominator.data = den.data();
  p.grad_out = dout.view();
  p.grad_q = dq.view();
  p.grad_k = dk.view();
  p.grad_v = dv.view();
  p.grad_initial_state = ds0.data();
  p.grad_initial_normalizer = dz0.data();

  // Runs the forward and/or backward kernel (passes: false = forward, true = backward).
  auto run = [&](std::initializer_list<bool> passes) {
    auto with_map = [&](auto map) {
      using Map = decltype(map);
      for (bool backward : passes) {
        if (c.causal) {
          run_kernels<T, kD, Map, true>(c, p, backward);
        } else {
          run_kernels<T, kD, Map, false>(c, p, backward);
        }
      }
    };
    switch (c.map) {
      case FeatureMapKind::kIdentity: with_map(actattn::IdentityMap{}); break;
      case FeatureMapKind::kRelu: with_map(actattn::ReluMap{}); break;
      case FeatureMapKind::kElu: with_map(actattn::EluPlusOneMap{}); break;
    }
  };
  run({false});
  const Reference ref = reference(c, q, k, v, dout, st, lengths, scale, eps, out);
  run({true});

  // Inputs, states and every product factor are rounded to 8 (bfloat16) or 11 (float16) significant bits;
  // gradients sum many such terms. Index or mask errors show as O(1) errors or NaN.
  const double tol = std::is_same_v<T, __half> ? 3e-3 : 2e-2;
  const double den_error = c.normalize ? vector_error(den, ref.den) : 0.0;
  const double errors[] = {relative_error(out, ref.out),     relative_error(dq, ref.dq),
                           relative_error(dk, ref.dk),       relative_error(dv, ref.dv),
                           vector_error(s_final, ref.s_final), vector_error(z_final, ref.z_final),
                           vector_error(ds0, ref.ds0),       vector_error(dz0, ref.dz0)};
  bool ok = den_error <= tol;
  for (double e : errors) ok = ok && e <= tol;

  // Only what is asked for (a null grad_q, or null grad_k and grad_v): what is computed is the same bits
  // as in the full backward (the initial state's gradients always are).
  auto same_bits = [](const auto& got, const auto& want) {
    return got.size() == want.size() && std::memcmp(got.data(), want.data(), got.size() * sizeof(got[0])) == 0;
  };
  const std::vector<T> full_dq = dq.data, full_dk = dk.data, full_dv = dv.data;
  const std::vector<float> full_ds0 = ds0, full_dz0 = dz0;
  auto clear_outputs = [&] {
    for (auto* t : {&dq, &dk, &dv}) std::fill(t->data.begin(), t->data.end(), T(0.f));
    std::fill(ds0.begin(), ds0.end(), 0.f);
    std::fill(dz0.begin(), dz0.end(), 0.f);
  };
  clear_outputs();
  p.grad_k = p.grad_v = actattn::RowView{};
  run({true});
  const bool q_only = same_bits(dq.data, full_dq) && same_bits(ds0, full_ds0) && same_bits(dz0, full_dz0);
  clear_outputs();
  p.grad_q = actattn::RowView{};
  p.grad_k = dk.view();
  p.grad_v = dv.view();
  run({true});
  const bool kv_only = same_bits(dk.data, full_dk) && same_bits(dv.data, full_dv) && same_bits(ds0, full_ds0) &&
                       same_bits(dz0, full_dz0);
  if (!q_only || !kv_only)
    std::printf("FAIL %s: the backward with only %s asked for differs from the full one\n", c.name().c_str(),
                !q_only ? "dq" : "dk, dv");
  ok = ok && q_only && kv_only;

  // Non-causal: the backward reading the forward's final state (as autograd passes it) instead of
  // rebuilding it from the keys; a doctored state must change dq, or the kernel is not reading it.
  if (!c.causal) {
    p.grad_q = dq.view();
    p.grad_k = dk.view();
    p.grad_v = dv.view();
    p.saved_state = s_final.data();
    p.saved_normalizer = z_final.data();
    run({true});
    const double saved_dq_error = relative_error(dq, ref.dq);
    const std::vector<T> saved_dq = dq.data;
    std::vector<float> doctored = s_final;
    for (float& x : doctored) x *= 2.f;
    p.saved_state = doctored.data();
    run({true});
    p.saved_state = p.saved_normalizer = nullptr;
    const bool reads_saved = saved_dq_error <= tol && !same_bits(dq.data, saved_dq);
    if (!reads_saved)
      std::printf("FAIL %s: with the saved state dq's error is %.1e, and a doctored one %s dq\n", c.name().c_str(),
                  saved_dq_error, same_bits(dq.data, saved_dq) ? "does not change" : "changes");
    ok = ok && reads_saved;
  }
  std::printf("%-4s %-66s out %.1e den %.1e dq %.1e dk %.1e dv %.1e S %.1e z %.1e dS0 %.1e dz0 %.1e\n",
              ok ? "ok" : "FAIL", c.name().c_str(), errors[0], den_error, errors[1], errors[2], errors[3], errors[4],
              errors[5], errors[6], errors[7]);
  return ok;
}

}  // namespace

int main(int argc, char** argv) {
  const std::string filter = argc > 1 ? argv[1] : "";
  using M = FeatureMapKind;
  // {B, H, Nq, Nk, D, map, causal, normalize, state, padded, interleaved, fp16}
  const std::vector<Case> cases = {
      {1, 2, 150, 150, 64, M::kElu, true, true, true, false, false, false},        // chunk edges, state
      {1, 1, 150, 150, 64, M::kElu, true, true, false, false, false, false},       // zero state
      {2, 1, 100, 100, 64, M::kRelu, true, true, true, true, true, false},         // padding, strides
      {1, 1, 130, 130, 64, M::kIdentity, true, false, true, false, false, false},  // unnormalised
      {2, 1, 70, 150, 64, M::kElu, false, true, true, true, true, false},          // Nq < Nk, padding
      {1, 1, 150, 40, 64, M::kElu, false, true, false, false, false, false},       // Nq > Nk
      {1, 1, 90, 70, 64, M::kIdentity, false, false, true, false, false, false},
      {1, 1, 140, 140, 128, M::kElu, true, true, true, false, false, false},       // D = 128
      {2, 1, 130, 130, 128, M::kRelu, true, false, false, true, false, false},
      {1, 1, 60, 140, 128, M::kElu, false, true, true, false, true, false},
      {1, 2, 64, 64, 64, M::kElu, true, true, true, false, false, true},           // float16
      {1, 1, 1, 1, 64, M::kRelu, false, true, true, false, false, true},
      // Values of large mean: float16 states past 65504 (S ~ N * 1.3 * 128 at N = 512), kept in range by a
      // power-of-two divisor; dq and dk, sums of terms ~128x their size that cancel, kept accurate by
      // centring the state and values on an output row.
      {1, 1, 512, 512, 64, M::kElu, true, true, false, false, false, true, 128.f},
      {1, 1, 100, 512, 128, M::kElu, false, true, false, false, false, true, 128.f},
      {2, 1, 300, 300, 64, M::kElu, true, true, true, true, false, false, 64.f},  // bfloat16, state, padding
  };

  return actattn::emulation_test::run_cases(cases, filter, [](auto kind, const Case& c, std::mt19937& gen) {
    return check_case<typename decltype(kind)::type, decltype(kind)::dim>(c, gen);
  });
}
