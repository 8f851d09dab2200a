// The generic linear attention backward (kernels/cuda/linear_backward.cuh: any dtype, any head dims,
// Dk != Dv), compiled by the host compiler and run on the CPU through kernels/cuda/warp_emulation.h,
// against the float64 reference of linear_reference.h. The forward's outputs come from the reference
// (rounded to the tensors' type, as the forward would store them), so the cases check the backward
// alone: its chunks, the two splits of the state (feature rows, value columns) and their edges,
// masks, padding, states and the "only what is asked for" paths.
// Not covered: timing, the hardware's rounding order.
//
// Usage: actattn_linear_generic_emulation [case-filter substring | --list]; exits 1 if any case fails. Built with
// -fsanitize=thread (actattn_linear_generic_emulation_tsan) it runs tsan_cases() instead of plain_cases().
#define ACTATTN_WARP_EMULATION
#include "../../kernels/cuda/warp_emulation.h"
// clang-format off
#include "../../kernels/feature_maps.h"
#include "../../kernels/cuda/linear_backward.cuh"
#include "emulated_tensors.h"
#include "linear_backward_checks.h"
#include "linear_reference.h"
// clang-format on

#include <cmath>
#include <cstdio>
#include <string>
#include <vector>

namespace {

using actattn::AttentionShape;
using actattn::FeatureMapKind;
using actattn::LinearParams;
using actattn::emulation_test::computes_only_what_is_asked;
using actattn::emulation_test::FeatureMapOf;
using actattn::emulation_test::linear_reference;
using actattn::emulation_test::LinearProblem;
using actattn::emulation_test::pad_keys;
using actattn::emulation_test::random_states;
using actattn::emulation_test::random_tensor;
using actattn::emulation_test::reads_saved_state;
using actattn::emulation_test::relative_error;
using actattn::emulation_test::EmulatedTensor;
using actattn::emulation_test::vector_error;

enum class Type { kFloat64, kFloat32, kBFloat16 };

struct Case {
  int64_t batch, heads, q_len, k_len, qk_dim, v_dim;
  FeatureMapKind map;
  bool causal, normalize, with_state, padded, interleaved;
  Type type;

  // The template arguments of the kernels the case runs: run_cases instantiates those of its cases only.
  struct Kernels {
    Type type;
    FeatureMapKind map;
    bool causal;
  };
  constexpr Kernels kernels() const { return {type, map, causal}; }

  LinearProblem problem() const {
    return {batch, heads, q_len, k_len, qk_dim, v_dim, map, causal, normalize, with_state};
  }
  std::string name() const {
    const char* maps[] = {"identity", "relu", "elu"};
    const char* types[] = {"fp64", "fp32", "bf16"};
    char buf[200];
    std::snprintf(buf, sizeof buf, "%s %s%s%s%s%s%s B%lld H%lld Nq%lld Nk%lld Dk%lld Dv%lld",
                  types[static_cast<int>(type)], maps[static_cast<int>(map)], causal ? " causal" : "",
                  normalize ? " norm" : "", with_state ? " state" : "", padded ? " padded" : "",
                  interleaved ? " interleaved" : "", (long long)batch, (long long)heads, (long long)q_len,
                  (long long)k_len, (long long)qk_dim, (long long)v_dim);
    return buf;
  }
};

template <typename T, typename Acc, typename Map, bool kCausal>
void run_backward(const LinearParams& p) {
  using namespace actattn::cuda;
  using namespace actattn::cuda::linear_backward;
  const AttentionShape& s = p.shape;
  const unsigned heads = static_cast<unsigned>(s.batch * s.heads);
  if (s.batch * s.heads * s.q_len > 0) {
    emulation::launch(dim3(blocks_for(s.batch * s.heads * s.q_len, 4)), 4 * kWarp,
                      [&] { row_terms_kernel<T, Acc>(p); });
  }
  if (p.grad_q.data != nullptr || p.grad_k.data != nullptr) {
    emulation::launch(dim3(heads, blocks_for(s.qk_dim, kFeatureRows)), kLinearThreads,
                      [&] { feature_grads_kernel<T, Acc, Map, kCausal>(p); });
  }
  emulation::launch(dim3(heads, static_cast<unsigned>(linear_column_blocks<Acc>(s.v_dim))), kLinearThreads,
                    [&] { value_grads_kernel<T, Acc, Map, kCausal>(p); });
}

template <typename T, typename Acc, typename Map, bool kCausal>
bool check_case(const Case& c, std::mt19937& gen) {
  const LinearProblem problem = c.problem();
  const int64_t B = c.batch, H = c.heads, Nq = c.q_len, Nk = c.k_len, Dk = c.qk_dim, Dv = c.v_dim, bh = B * H;
  auto q = random_tensor<T>(B, H, Nq, Dk, c.interleaved, gen);
  auto k = random_tensor<T>(B, H, Nk, Dk, c.interleaved, gen);
  auto v = random_tensor<T>(B, H, Nk, Dv, c.interleaved, gen);
  auto dout = random_tensor<T>(B, H, Nq, Dv, c.interleaved, gen);
  EmulatedTensor<T> out(B, H, Nq, Dv, c.interleaved), dq(B, H, Nq, Dk, c.interleaved);
  EmulatedTensor<T> dk(B, H, Nk, Dk, c.interleaved), dv(B, H, Nk, Dv, c.interleaved);
  const std::vector<int64_t> lengths = pad_keys(c.padded, k, v);
  const auto st = random_states<Acc>(bh, Dk, Dv, gen);
  const double scale = 1.0 / std::sqrt(double(Dk)), eps = 1e-6;

  // The forward's outputs, as it would store them; then the reference gradients from them.
  const auto forward = linear_reference(problem, q, k, v, dout, st, lengths, scale, eps, out, /*dq_from_exact_output=*/false);
  for (int64_t b = 0; b < B; ++b)
    for (int64_t h = 0; h < H; ++h)
      for (int64_t i = 0; i < Nq; ++i)
        for (int64_t e = 0; e < Dv; ++e)
          out.data[out.offset(b, h, i) + e] = T(static_cast<float>(forward.out[((b * H + h) * Nq + i) * Dv + e]));
  const auto ref = linear_reference(problem, q, k, v, dout, st, lengths, scale, eps, out, /*dq_from_exact_output=*/false);
  std::vector<Acc> den(ref.den.begin(), ref.den.end()), ds0(bh * Dk * Dv), dz0(bh * Dk);
  const std::vector<Acc> saved_state(ref.s_final.begin(), ref.s_final.end());
  const std::vector<Acc> saved_normalizer(ref.z_final.begin(), ref.z_final.end());

  LinearParams p;
  p.feature_map = c.map;
  p.causal = c.causal;
  p.normalize = c.normalize;
  p.shape = AttentionShape{B, H, Nq, Nk, Dk, Dv};
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
  p.denominator.data = den.data();
  p.grad_out = dout.view();
  p.grad_q = dq.view();
  p.grad_k = dk.view();
  p.grad_v = dv.view();
  p.grad_initial_state = ds0.data();
  p.grad_initial_normalizer = dz0.data();
  // The workspace starts as NaN: the kernels must write every entry they read.
  std::vector<Acc> workspace(actattn::cuda::linear_backward::workspace_elems(p.shape), Acc(NAN));
  p.workspace = workspace.data();

  if (c.causal != kCausal) {
    std::printf("FAIL %s: Case::kernels() disagrees with the case's parameters\n", c.name().c_str());
    return false;
  }
  auto run = [&] { run_backward<T, Acc, Map, kCausal>(p); };
  run();

  // float64 and float32 compute in their own precision; bfloat16 rounds the gradients it stores to 8
  // significant bits. Index, mask or split errors show as O(1) errors or NaN.
  const double tol = c.type == Type::kFloat64 ? 1e-10 : c.type == Type::kFloat32 ? 1e-4 : 1e-2;
  const double errors[] = {relative_error(dq, ref.dq), relative_error(dk, ref.dk), relative_error(dv, ref.dv),
                           vector_error(ds0, ref.ds0), vector_error(dz0, ref.dz0)};
  bool ok = true;
  for (double e : errors) ok = ok && e <= tol;

  ok = computes_only_what_is_asked(c.name(), p, run, dq, dk, dv, ds0, dz0) && ok;
  if (!c.causal) ok = reads_saved_state(c.name(), p, run, dq, ref.dq, tol, saved_state, saved_normalizer) && ok;
  std::printf("%-4s %-72s dq %.1e dk %.1e dv %.1e dS0 %.1e dz0 %.1e\n", ok ? "ok" : "FAIL", c.name().c_str(),
              errors[0], errors[1], errors[2], errors[3], errors[4]);
  return ok;
}

// Every case of the plain build.
constexpr std::vector<Case> plain_cases() {
  using M = FeatureMapKind;
  const Type f64 = Type::kFloat64, f32 = Type::kFloat32, bf16 = Type::kBFloat16;
  // {B, H, Nq, Nk, Dk, Dv, map, causal, normalize, state, padded, interleaved, type}. Head dims off the
  // splits' multiples (16 feature rows per block, 32 or 16 value columns) and lengths off the 16-row chunks.
  return {
      {1, 2, 70, 70, 40, 24, M::kElu, true, true, true, false, false, f64},     // Dk > Dv, state
      {2, 1, 50, 50, 24, 72, M::kRelu, true, true, false, true, true, f64},     // Dk < Dv, padding, strides
      {1, 1, 45, 45, 17, 33, M::kIdentity, true, false, true, false, false, f64},  // unnormalised
      {2, 1, 30, 70, 40, 40, M::kElu, false, true, true, true, true, f64},      // Nq < Nk, padding
      {1, 1, 70, 20, 33, 20, M::kRelu, false, true, false, false, false, f64},  // Nq > Nk
      {1, 1, 40, 33, 16, 16, M::kIdentity, false, false, true, false, false, f64},
      {2, 1, 70, 70, 40, 72, M::kElu, true, true, true, true, false, f32},
      {1, 1, 60, 90, 96, 96, M::kElu, false, true, true, false, true, f32},     // D = 96 (Phi's head dim)
      {1, 1, 50, 50, 96, 96, M::kElu, true, true, true, false, false, bf16},    // float16 types' fallback
      {1, 1, 1, 1, 8, 8, M::kRelu, false, true, true, false, false, bf16},
  };
}

// The ThreadSanitizer build's cases: two of the plain ones, causal and not, which launch every kernel.
constexpr std::vector<Case> tsan_cases() {
  using M = FeatureMapKind;
  return {
      {2, 1, 70, 70, 40, 72, M::kElu, true, true, true, true, false, Type::kFloat32},
      {2, 1, 30, 70, 40, 40, M::kElu, false, true, true, true, true, Type::kFloat64},
  };
}

constexpr auto kCases = actattn::emulation_test::cases_of_this_build<plain_cases, tsan_cases>();

}  // namespace

int main(int argc, char** argv) {
  return actattn::emulation_test::run_cases<kCases>(argc, argv, [](auto kernels, const Case& c, std::mt19937& gen) {
    constexpr Case::Kernels k = decltype(kernels)::value;
    using Map = FeatureMapOf<k.map>;
    if constexpr (k.type == Type::kFloat64) {
      return check_case<double, double, Map, k.causal>(c, gen);
    } else if constexpr (k.type == Type::kFloat32) {
      return check_case<float, float, Map, k.causal>(c, gen);
    } else {
      return check_case<__nv_bfloat16, float, Map, k.causal>(c, gen);
    }
  });
}
