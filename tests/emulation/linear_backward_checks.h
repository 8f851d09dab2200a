// Inputs and checks shared by the emulated linear-attention kernel tests (tests/emulation/linear_*.cpp):
// key padding, random states, and the backward's contracts besides its accuracy (only what is asked
// for is computed, the same bits either way; the non-causal backward reads the saved state).
#pragma once

#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <random>
#include <string>
#include <type_traits>
#include <vector>

#include "../../kernels/feature_maps.h"
#include "../../kernels/params.h"
#include "emulated_tensors.h"
#include "linear_reference.h"

namespace actattn {
namespace emulation_test {

// The feature map's type for a FeatureMapKind known at compile time (a case's Kernels).
template <FeatureMapKind kMap>
using FeatureMapOf = std::conditional_t<kMap == FeatureMapKind::kIdentity, IdentityMap,
                                        std::conditional_t<kMap == FeatureMapKind::kRelu, ReluMap, EluPlusOneMap>>;

// Keys per sequence (all k_len unless padded: then sequence b keeps (37 b + Nk / 2) % (Nk + 1), sequence
// 0 none). Padding keys and values are set to NaN: they must never reach a product.
template <typename T>
std::vector<int64_t> pad_keys(bool padded, EmulatedTensor<T>& k, EmulatedTensor<T>& v) {
  std::vector<int64_t> lengths(k.batch, k.rows);
  if (!padded) return lengths;
  for (int64_t b = 0; b < k.batch; ++b) lengths[b] = (b * 37 + k.rows / 2) % (k.rows + 1);
  lengths[0] = 0;
  for (int64_t b = 0; b < k.batch; ++b)
    for (int64_t h = 0; h < k.heads; ++h)
      for (int64_t j = lengths[b]; j < k.rows; ++j) {
        for (int64_t d = 0; d < k.dim; ++d) k.data[k.offset(b, h, j) + d] = T(NAN);
        for (int64_t e = 0; e < v.dim; ++e) v.data[v.offset(b, h, j) + e] = T(NAN);
      }
  return lengths;
}

// Standard normal states and final-state gradients; a positive initial normaliser, as a real one is under
// relu and elu+1, keeps den away from zero.
template <typename Acc>
LinearStates<Acc> random_states(int64_t heads, int64_t qk_dim, int64_t v_dim, std::mt19937& gen) {
  LinearStates<Acc> st;
  std::normal_distribution<float> normal;
  for (auto* x : {&st.s0, &st.ds_final}) {
    x->resize(heads * qk_dim * v_dim);
    for (Acc& e : *x) e = Acc(normal(gen));
  }
  for (auto* x : {&st.z0, &st.dz_final}) {
    x->resize(heads * qk_dim);
    for (Acc& e : *x) e = Acc(x == &st.z0 ? 4.f * std::abs(normal(gen)) : normal(gen));
  }
  return st;
}

template <typename V>
bool same_bits(const V& got, const V& want) {
  return got.size() == want.size() && std::memcmp(got.data(), want.data(), got.size() * sizeof(got[0])) == 0;
}

// After a full backward (run(), writing dq, dk, dv, ds0, dz0 through p): with a null grad_q, or null
// grad_k and grad_v, what is computed is the same bits as in the full backward (the initial state's
// gradients always are). Leaves p asking for every gradient.
template <typename T, typename Acc, typename Run>
bool computes_only_what_is_asked(const std::string& name, LinearParams& p, Run&& run, EmulatedTensor<T>& dq,
                                 EmulatedTensor<T>& dk, EmulatedTensor<T>& dv, std::vector<Acc>& ds0,
                                 std::vector<Acc>& dz0) {
  const std::vector<T> full_dq = dq.data, full_dk = dk.data, full_dv = dv.data;
  const std::vector<Acc> full_ds0 = ds0, full_dz0 = dz0;
  auto clear_outputs = [&] {
    for (auto* t : {&dq, &dk, &dv}) std::fill(t->data.begin(), t->data.end(), T(0.f));
    std::fill(ds0.begin(), ds0.end(), Acc(0));
    std::fill(dz0.begin(), dz0.end(), Acc(0));
  };
  clear_outputs();
  p.grad_k = p.grad_v = RowView{};
  run();
  const bool q_only = same_bits(dq.data, full_dq) && same_bits(ds0, full_ds0) && same_bits(dz0, full_dz0);
  clear_outputs();
  p.grad_q = RowView{};
  p.grad_k = dk.view();
  p.grad_v = dv.view();
  run();
  const bool kv_only = same_bits(dk.data, full_dk) && same_bits(dv.data, full_dv) && same_bits(ds0, full_ds0) &&
                       same_bits(dz0, full_dz0);
  p.grad_q = dq.view();
  if (!q_only || !kv_only)
    std::printf("FAIL %s: the backward with only %s asked for differs from the full one\n", name.c_str(),
                !q_only ? "dq" : "dk, dv");
  return q_only && kv_only;
}

// Non-causal: the backward reading the forward's final state (as autograd passes it) instead of
// rebuilding it from the keys gives dq within tol of the reference, and a doctored state changes dq
// (or the kernel is not reading it).
template <typename T, typename Acc, typename Run>
bool reads_saved_state(const std::string& name, LinearParams& p, Run&& run, EmulatedTensor<T>& dq,
                       const std::vector<double>& want_dq, double tol, std::vector<Acc> state,
                       const std::vector<Acc>& normalizer) {
  p.saved_state = state.data();
  p.saved_normalizer = normalizer.data();
  run();
  const double saved_dq_error = relative_error(dq, want_dq);
  const std::vector<T> saved_dq = dq.data;
  for (Acc& x : state) x *= Acc(2);
  run();
  p.saved_state = p.saved_normalizer = nullptr;
  const bool changed = !same_bits(dq.data, saved_dq);
  if (saved_dq_error > tol || !changed)
    std::printf("FAIL %s: with the saved state dq's error is %.1e, and a doctored one %s dq\n", name.c_str(),
                saved_dq_error, changed ? "changes" : "does not change");
  return saved_dq_error <= tol && changed;
}

}  // namespace emulation_test
}  // namespace actattn
