// The tensor-core linear attention kernels (kernels/cuda/linear_*_tc.cuh), compiled by the host compiler
// and run on the CPU through kernels/cuda/warp_emulation.h, against the float64 reference of
// linear_reference.h (the direct O(N^2) sums from the same rounded inputs: no chunks, no states), so the chunked
// algorithm, its masks, the state carried between chunks and the gradient formulas are all checked.
// Not covered: timing, races the emulation's barriers hide, the hardware's rounding order.
//
// Usage: actattn_linear_emulation [case-filter substring | --list]; exits 1 if any case fails. Built with
// -fsanitize=thread (actattn_linear_emulation_tsan) it runs tsan_cases() instead of plain_cases().
#define ACTATTN_WARP_EMULATION
#include "../../kernels/cuda/warp_emulation.h"
// clang-format off
#include "../../kernels/feature_maps.h"
#include "../../kernels/cuda/linear_forward_tc.cuh"
#include "../../kernels/cuda/linear_backward_tc.cuh"
#include "emulated_tensors.h"
#include "linear_backward_checks.h"
#include "linear_reference.h"
// clang-format on

#include <cmath>
#include <cstdio>
#include <string>
#include <type_traits>
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
using actattn::emulation_test::same_bits;
using actattn::emulation_test::relative_error;
using actattn::emulation_test::EmulatedTensor;
using actattn::emulation_test::vector_error;

// What a case runs: everything, or less where TSan would take minutes (tsan_cases() says which).
enum class Runs {
  kEverything,   // forward, backward, the backward again asked for dq alone and for dk, dv alone, the saved state
  kOneBackward,  // the forward and one full backward
};

struct Case {
  int64_t batch, heads, q_len, k_len, dim;
  FeatureMapKind map;
  bool causal, normalize;
  bool with_state;   // initial state and gradients into the final state
  bool padded;       // key_lengths shorter than k_len for some sequences
  bool interleaved;  // (B, N, H, D) memory viewed as (B, H, N, D)
  bool half;         // float16 instead of bfloat16
  float value_mean = 0.f;  // added to v: states that grow past float16's range with N
  int64_t v_dim = 0;       // Dv when not dim
  float feature_mean = 0.f;  // added to q and k: large den, so float16's dnum = dO / den would be subnormal
  bool compact = false;      // D = 128, 256: the backward's compact tile layouts (GPUs granting 99 KiB, sm_86 / 89)
  Runs runs = Runs::kEverything;

  constexpr int64_t value_dim() const { return v_dim != 0 ? v_dim : dim; }

  // The template arguments of the kernels the case runs: run_cases instantiates those of its cases only.
  struct Kernels {
    bool half;
    int64_t dk, dv;
    FeatureMapKind map;
    bool causal;
  };
  constexpr Kernels kernels() const { return {half, dim, value_dim(), map, causal}; }
  LinearProblem problem() const {
    return {batch, heads, q_len, k_len, dim, value_dim(), map, causal, normalize, with_state};
  }

  std::string name() const {
    const char* maps[] = {"identity", "relu", "elu"};
    const char* run_names[] = {"", " one-backward"};
    char buf[200];
    std::snprintf(buf, sizeof buf, "%s %s%s%s%s%s%s%s%s B%lld H%lld Nq%lld Nk%lld D%lld%s%s%s", half ? "fp16" : "bf16",
                  maps[static_cast<int>(map)], causal ? " causal" : "", normalize ? " norm" : "",
                  with_state ? " state" : "", padded ? " padded" : "", interleaved ? " interleaved" : "",
                  compact ? " compact" : "", run_names[static_cast<int>(runs)],
                  (long long)batch, (long long)heads, (long long)q_len, (long long)k_len, (long long)dim,
                  v_dim != 0 ? ("/" + std::to_string(v_dim)).c_str() : "",
                  value_mean != 0.f ? (" v+" + std::to_string(static_cast<int>(value_mean))).c_str() : "",
                  feature_mean != 0.f ? (" qk+" + std::to_string(static_cast<int>(feature_mean))).c_str() : "");
    return buf;
  }
};

// The forward's or the backward's launches, as linear_*_tc.cu make them (their run()), each emulated.
// The workspace starts as NaN: the kernels must write every entry they read.
template <typename T, int kDk, int kDv, typename Map, bool kCausal>
void run_kernels(LinearParams& p, bool backward, bool compact) {
  using namespace actattn::cuda;
  auto launch = [](auto kernel, dim3 grid, int, const char*, const auto&... args) {
    emulation::launch(grid, linear_forward_tc::kThreads, [&] { kernel(args...); });
  };
  std::vector<float> workspace(
      backward ? linear_backward_tc::workspace_elems(p) : linear_forward_tc::Plan(p).workspace_elems(), NAN);
  if (!backward) return linear_forward_tc::run<T, Map, kCausal, kDk, kDv>(p, workspace.data(), launch);
  linear_backward_tc::run<T, Map, kCausal, kDk, kDv>(p, workspace.data(), launch, compact);
}

template <typename T, int kDk, int kDv, typename Map, bool kCausal>
bool check_case(const Case& c, std::mt19937& gen) {
  auto q = random_tensor<T>(c.batch, c.heads, c.q_len, kDk, c.interleaved, gen);
  auto k = random_tensor<T>(c.batch, c.heads, c.k_len, kDk, c.interleaved, gen);
  auto v = random_tensor<T>(c.batch, c.heads, c.k_len, kDv, c.interleaved, gen);
  for (T& x : v.data) x = T(static_cast<float>(x) + c.value_mean);
  for (auto* t : {&q, &k}) {
    for (T& x : t->data) x = T(static_cast<float>(x) + c.feature_mean);
  }
  auto dout = random_tensor<T>(c.batch, c.heads, c.q_len, kDv, c.interleaved, gen);
  EmulatedTensor<T> out(c.batch, c.heads, c.q_len, kDv, c.interleaved), dq(c.batch, c.heads, c.q_len, kDk, c.interleaved);
  EmulatedTensor<T> dk(c.batch, c.heads, c.k_len, kDk, c.interleaved), dv(c.batch, c.heads, c.k_len, kDv, c.interleaved);
  const std::vector<int64_t> lengths = pad_keys(c.padded, k, v);
  const int64_t bh = c.batch * c.heads;
  const auto st = random_states<float>(bh, kDk, kDv, gen);
  const double scale = 1.0 / std::sqrt(double(kDk)), eps = 1e-6;

  std::vector<float> den(bh * c.q_len), s_final(bh * kDk * kDv), z_final(bh * kDk), ds0(s_final.size()),
      dz0(z_final.size());
  LinearParams p;
  p.feature_map = c.map;
  p.causal = c.causal;
  p.normalize = c.normalize;
  p.shape = AttentionShape{c.batch, c.heads, c.q_len, c.k_len, kDk, kDv};
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

  if (c.causal != kCausal) {
    std::printf("FAIL %s: Case::kernels() disagrees with the case's parameters\n", c.name().c_str());
    return false;
  }
  // Runs the forward and/or backward kernel (passes: false = forward, true = backward).
  auto run = [&](std::initializer_list<bool> passes) {
    for (bool backward : passes) run_kernels<T, kDk, kDv, Map, kCausal>(p, backward, c.compact);
  };
  run({false});
  const auto ref = linear_reference(c.problem(), q, k, v, dout, st, lengths, scale, eps, out, /*dq_from_exact_output=*/true);

  // Inputs, states and every product factor are rounded to 8 (bfloat16) or 11 (float16) significant bits;
  // gradients sum many such terms. Index or mask errors show as O(1) errors or NaN.
  const double tol = std::is_same_v<T, __half> ? 3e-3 : 2e-2;
  const double den_error = c.normalize ? vector_error(den, ref.den) : 0.0;
  run({true});

  const double errors[] = {relative_error(out, ref.out),     relative_error(dq, ref.dq),
                           relative_error(dk, ref.dk),       relative_error(dv, ref.dv),
                           vector_error(s_final, ref.s_final), vector_error(z_final, ref.z_final),
                           vector_error(ds0, ref.ds0),       vector_error(dz0, ref.dz0)};
  bool ok = den_error <= tol;
  for (double e : errors) ok = ok && e <= tol;

  // The compact layouts form the same products in the same order as the full ones: the same bits, but
  // in float16 at Dk = 256, whose halves of the state are each divided by their own power of two.
  if (c.compact && (std::is_same_v<T, __nv_bfloat16> || kDk <= 128)) {
    const auto compact_dq = dq.data, compact_dk = dk.data, compact_dv = dv.data;
    const auto compact_ds0 = ds0, compact_dz0 = dz0;
    run_kernels<T, kDk, kDv, Map, kCausal>(p, /*backward=*/true, /*compact=*/false);
    if (!(same_bits(dq.data, compact_dq) && same_bits(dk.data, compact_dk) && same_bits(dv.data, compact_dv) &&
          same_bits(ds0, compact_ds0) && same_bits(dz0, compact_dz0))) {
      std::printf("FAIL %s: the compact layouts' gradients differ from the full layouts'\n", c.name().c_str());
      ok = false;
    }
    dq.data = compact_dq;  // the checks below rerun the compact layouts against their own gradients
    dk.data = compact_dk;
    dv.data = compact_dv;
    ds0 = compact_ds0;
    dz0 = compact_dz0;
  }

  const auto backward = [&] { run({true}); };
  if (c.runs == Runs::kEverything) {
    ok = computes_only_what_is_asked(c.name(), p, backward, dq, dk, dv, ds0, dz0) && ok;
    if (!c.causal) ok = reads_saved_state(c.name(), p, backward, dq, ref.dq, tol, s_final, z_final) && ok;
  }
  std::printf("%-4s %-66s out %.1e den %.1e dq %.1e dk %.1e dv %.1e S %.1e z %.1e dS0 %.1e dz0 %.1e\n",
              ok ? "ok" : "FAIL", c.name().c_str(), errors[0], den_error, errors[1], errors[2], errors[3], errors[4],
              errors[5], errors[6], errors[7]);
  return ok;
}

// Every case of the plain build. {B, H, Nq, Nk, D, map, causal, normalize, state, padded, interleaved, fp16}
constexpr std::vector<Case> plain_cases() {
  using M = FeatureMapKind;
  return {
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
      {1, 2, 100, 100, 32, M::kElu, true, true, true, false, false, false},        // D = 32: 32 value columns
      {2, 1, 150, 150, 96, M::kRelu, true, true, false, true, true, false},        // D = 96: 3 column blocks
      {1, 1, 80, 130, 96, M::kElu, false, true, true, false, false, true},
      // Dk != Dv: (64, 128) and (128, 64), the pairs with kernels.
      {2, 1, 130, 130, 64, M::kElu, true, true, true, true, false, false, 0.f, 128},
      {1, 1, 100, 70, 128, M::kRelu, false, true, true, false, true, true, 0.f, 64},
      {1, 2, 64, 64, 64, M::kElu, true, true, true, false, false, true},           // float16
      {1, 1, 1, 1, 64, M::kRelu, false, true, true, false, false, true},
      // Values of large mean: float16 states past 65504 (S ~ N * 1.3 * 128 at N = 512), kept in range by a
      // power-of-two divisor; dq and dk, sums of terms ~128x their size that cancel, kept accurate by
      // centring the state and values on an output row.
      {1, 1, 512, 512, 64, M::kElu, true, true, false, false, false, true, 128.f},
      {1, 1, 100, 512, 128, M::kElu, false, true, false, false, false, true, 128.f},
      {2, 1, 300, 300, 64, M::kElu, true, true, true, true, false, false, 64.f},  // bfloat16, state, padding
      // Non-causal outputs are all near the values' mean: o_i - m, which dq needs, is below half an ulp of
      // o_i in bfloat16, so dq must not take it from the saved output.
      {1, 1, 100, 400, 64, M::kElu, false, true, false, false, false, false, 64.f},
      // den up to 6e6: float16's dnum = dO / den is scaled by a power of two into its normal range.
      {1, 1, 64, 4096, 64, M::kElu, false, true, false, false, false, true, 0.f, 0, 12.f},
      {1, 1, 400, 400, 64, M::kElu, true, true, true, false, false, true, 0.f, 0, 12.f},
      // D = 128 in the compact layouts (V over B in the dk, dv block, A over the state in the dq block):
      // causal and not, normalised and not, padding, strides, values of large mean.
      {1, 1, 100, 100, 128, M::kElu, true, true, true, false, false, false, 0.f, 0, 0.f, true},
      {2, 1, 130, 130, 128, M::kRelu, true, false, false, true, true, false, 0.f, 0, 0.f, true},
      {2, 1, 100, 512, 128, M::kElu, false, true, true, true, false, true, 128.f, 0, 0.f, true},
      // D = 256: the forward's 4 column blocks of 64, its state tile loaded in two batches; the backward's
      // 4 value groups summing dq and dk; float16 states past 65504 divided into range.
      {2, 1, 150, 150, 256, M::kElu, true, true, true, true, false, false},
      {2, 1, 100, 130, 256, M::kRelu, false, false, true, false, true, false},
      {2, 1, 90, 140, 256, M::kElu, false, true, true, true, false, true},  // non-causal: the saved state's slices
      {1, 1, 512, 512, 256, M::kElu, true, true, false, false, false, true, 128.f},
      // D = 256 in the compact layouts (sm_86/89: the key block's state tile holds half of dS_c's rows at
      // a time, each half rounded at its own float16 divisor): causal and not, float16 values of large mean;
      // in bfloat16 bit for bit the full layouts' gradients (two bfloat16 cases: the half loads' barrier fails both).
      {2, 1, 150, 150, 256, M::kRelu, true, true, true, true, false, false, 0.f, 0, 0.f, true},
      {1, 1, 100, 300, 256, M::kElu, false, true, true, false, true, false, 128.f, 0, 0.f, true},
      {1, 1, 300, 300, 256, M::kElu, true, true, true, false, false, true, 64.f, 0, 0.f, true},
      // Small, two chunks: the TSan build's D = 256 case, which runs less of it (tsan_cases()).
      {1, 1, 70, 70, 256, M::kElu, true, true, true, false, false, true},
  };
}

// The ThreadSanitizer build's cases (TSan makes a case 20-100x slower), which between them launch every
// kernel of the forward and the backward at every head dim pair with tensor-core kernels, causal and not:
// D = 64 and 128, the backward's compact layouts of sm_86/89; float16, whose state loaders take the
// block's largest entry through a barrier, at (Dk, Dv) = (128, 64); D = 256, whose forward reads the
// state tile in two batches and whose backward runs four value groups at (Dk, Dv) = (256, 64), summing
// their shares of dq and dk, in the full layouts and (bfloat16: float16's divisor has a barrier of its
// own that hides a missing one) the compact ones, whose key block loads the state's halves in turn; these
// two run one backward (Runs::kOneBackward: 45-60 CPU-seconds each under TSan; the reruns asking for dq or
// dk, dv alone tripled it, and the plain build runs them); D = 32 and 96, blocks of 32 value columns;
// (64, 128). 3-17 s each but at D = 256. With each barrier of the tensor-core kernels deleted in turn,
// TSan reports a race in at least one of these cases (tools/barrier_mutants.sh --tsan).
constexpr std::vector<Case> tsan_cases() {
  using M = FeatureMapKind;
  return {
      {1, 2, 150, 150, 64, M::kElu, true, true, true, false, false, false},
      {2, 1, 70, 150, 64, M::kElu, false, true, true, true, true, false},
      {1, 1, 100, 100, 128, M::kElu, true, true, true, false, false, false, 0.f, 0, 0.f, true},
      {1, 1, 100, 70, 128, M::kRelu, false, true, true, false, true, true, 0.f, 64},
      {1, 1, 70, 70, 256, M::kElu, true, true, true, false, false, true, 0.f, 0, 0.f, false, Runs::kOneBackward},
      {1, 1, 64, 64, 256, M::kRelu, true, true, true, false, false, false, 0.f, 0, 0.f, true, Runs::kOneBackward},
      {1, 2, 100, 100, 32, M::kElu, true, true, true, false, false, false},
      {2, 1, 70, 70, 64, M::kElu, true, true, true, true, false, false, 0.f, 128},
      {1, 1, 60, 70, 96, M::kElu, false, true, true, false, true, true},
  };
}

constexpr auto kCases = actattn::emulation_test::cases_of_this_build<plain_cases, tsan_cases>();

}  // namespace

int main(int argc, char** argv) {
  return actattn::emulation_test::run_cases<kCases>(argc, argv, [](auto kernels, const Case& c, std::mt19937& gen) {
    constexpr Case::Kernels k = decltype(kernels)::value;
    using T = std::conditional_t<k.half, __half, __nv_bfloat16>;
    return check_case<T, k.dk, k.dv, FeatureMapOf<k.map>, k.causal>(c, gen);
  });
}
