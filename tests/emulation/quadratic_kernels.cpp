// The tensor-core quadratic kernels (kernels/cuda/quadratic_*_tc.cuh), compiled by the host compiler
// and run on the CPU through kernels/cuda/warp_emulation.h, against a float64 reference computed here from the same
// rounded inputs. Catches what a GPU-less machine can: tile and fragment index arithmetic, masks
// (causal, padding keys, tile edges), strides, the online softmax, dropout's per-pair factors (the
// reference draws them through kernels/dropout.h, whose generator the Python tests check against
// Philox's known answers) and the gradient formulas.
// Not covered: timing, races the emulation's barriers hide, the hardware's rounding order.
//
// Usage: actattn_quadratic_emulation [case-filter substring | --list]; exits 1 if any case fails. Built with
// -fsanitize=thread (actattn_quadratic_emulation_tsan) it runs tsan_cases() instead of plain_cases().
#define ACTATTN_WARP_EMULATION
#include "../../kernels/cuda/warp_emulation.h"
// clang-format off
#include "../../kernels/dropout.h"
#include "../../kernels/score_activations.h"
#include "../../kernels/cuda/quadratic_forward_tc.cuh"
#include "../../kernels/cuda/quadratic_backward_tc.cuh"
#include "emulated_tensors.h"
// clang-format on

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <string>
#include <type_traits>
#include <vector>

namespace {

using actattn::AttentionShape;
using actattn::emulation_test::random_tensor;
using actattn::emulation_test::relative_error;
using actattn::emulation_test::EmulatedTensor;
using actattn::QuadraticParams;
using actattn::RowView;
using actattn::ScoreActivation;

struct Case {
  int64_t batch, heads, q_len, k_len, dim;
  ScoreActivation activation;
  bool causal;
  bool padded;        // key_lengths shorter than k_len for some sequences
  bool interleaved;   // (B, N, H, D) memory viewed as (B, H, N, D)
  bool half;          // float16 instead of bfloat16
  bool bottom_right = false;  // causal mask aligned bottom-right (kernels/key_lengths.h)
  double dropout_p = 0.0;
  int64_t window_left = -1, window_right = -1;  // sliding window (-1: unbounded side)
  // The dK/dV kernel's compact tiles (GPUs granting 99 KiB, sm_86 / 89): 32-query tiles at D = 128, one
  // buffer at D = 256; their dK and dV are also checked bit for bit against the full tiles'.
  bool compact = false;
  int64_t v_dim = 0;  // Dv when not dim

  constexpr int64_t value_dim() const { return v_dim != 0 ? v_dim : dim; }

  // The template arguments of the kernels the case runs: run_cases instantiates those of its cases only.
  struct Kernels {
    bool half;
    int64_t dk, dv;
    ScoreActivation activation;
    bool banded;  // QuadraticParams::banded(): causal or a window
    bool compact;
  };
  constexpr Kernels kernels() const {
    return {half, dim, value_dim(), activation, causal || window_left >= 0 || window_right >= 0, compact};
  }

  std::string name() const {
    const char* act[] = {"softmax", "sigmoid", "relu"};
    char buf[160];
    std::snprintf(buf, sizeof buf, "%s %s%s%s%s%s%s B%lld H%lld Nq%lld Nk%lld D%lld%s", half ? "fp16" : "bf16",
                  act[static_cast<int>(activation)], causal ? (bottom_right ? " causal-br" : " causal") : "",
                  dropout_p > 0 ? " dropout" : window_left >= 0 || window_right >= 0 ? " window" : "",
                  padded ? " padded" : "", interleaved ? " interleaved" : "", compact ? " compact" : "",
                  (long long)batch, (long long)heads, (long long)q_len, (long long)k_len, (long long)dim,
                  v_dim != 0 ? ("/" + std::to_string(v_dim)).c_str() : "");
    return buf;
  }
};

struct Reference {
  std::vector<double> out, lse, dq, dk, dv;  // (B, H, N, Dk or Dv) contiguous; lse (B, H, Nq)
};

double activation_prob(ScoreActivation act, double s, double inv_divisor) {
  if (act == ScoreActivation::kSigmoid) return inv_divisor / (1 + std::exp(-s));
  return s > 0 ? s * inv_divisor : 0.0;  // relu
}

double activation_dscore(ScoreActivation act, double s, double dp, double inv_divisor) {
  if (act == ScoreActivation::kSigmoid) {
    const double sig = 1 / (1 + std::exp(-s));
    return dp * sig * (1 - sig) * inv_divisor;
  }
  return s > 0 ? dp * inv_divisor : 0.0;
}

constexpr int64_t kDropoutSeed = 0x5EED5EED5EEDLL;

template <typename T>
Reference reference(const Case& c, const EmulatedTensor<T>& q, const EmulatedTensor<T>& k, const EmulatedTensor<T>& v,
                    const EmulatedTensor<T>& dout, const std::vector<int64_t>& lengths, double scale) {
  const int64_t D = c.dim, Dv = c.value_dim();
  QuadraticParams dropout_params;
  dropout_params.dropout_p = c.dropout_p;
  dropout_params.dropout_seed = &kDropoutSeed;
  const auto dropout = actattn::Dropout<double>::of(dropout_params);
  Reference r;
  r.out.assign(c.batch * c.heads * c.q_len * Dv, 0);
  r.lse.assign(c.batch * c.heads * c.q_len, -INFINITY);
  r.dq.assign(c.batch * c.heads * c.q_len * D, 0);
  r.dk.assign(c.batch * c.heads * c.k_len * D, 0);
  r.dv.assign(c.batch * c.heads * c.k_len * Dv, 0);
  for (int64_t b = 0; b < c.batch; ++b) {
    const int64_t keys = lengths[b];
    const double n = keys > 1 ? double(keys) : 1.0;
    const double bias = c.activation == ScoreActivation::kSigmoid ? -std::log(n) : 0.0;
    const double inv_div = c.activation == ScoreActivation::kRelu ? 1.0 / n : 1.0;
    for (int64_t h = 0; h < c.heads; ++h) {
      const int64_t bh = b * c.heads + h;
      for (int64_t i = 0; i < c.q_len; ++i) {
        // Query i sees keys [first, visible): causal and the window around its diagonal i + offset.
        const int64_t offset = c.bottom_right ? keys - c.q_len : 0;
        const int64_t right = c.causal ? 0 : c.window_right;
        const int64_t visible = right >= 0 ? std::clamp<int64_t>(i + offset + right + 1, 0, keys) : keys;
        const int64_t first = c.window_left >= 0 ? std::clamp<int64_t>(i + offset - c.window_left, 0, visible) : 0;
        std::vector<double> s(visible, -INFINITY), p(visible), dp(visible), z(visible);
        for (int64_t j = first; j < visible; ++j) {
          double dot = 0;
          for (int64_t d = 0; d < D; ++d) dot += q.at(b, h, i, d) * k.at(b, h, j, d);
          s[j] = scale * dot + bias;
        }
        double lse = -INFINITY;
        if (c.activation == ScoreActivation::kSoftmax && visible > first) {
          double m = -INFINITY, sum = 0;
          for (double x : s) m = std::max(m, x);
          for (int64_t j = first; j < visible; ++j) sum += std::exp(s[j] - m);
          lse = m + std::log(sum);
          r.lse[bh * c.q_len + i] = lse;
        }
        for (int64_t j = first; j < visible; ++j) {
          p[j] = c.activation == ScoreActivation::kSoftmax ? std::exp(s[j] - lse)
                                                          : activation_prob(c.activation, s[j], inv_div);
          z[j] = dropout.multiplier(bh * c.q_len + i, j);
        }
        double* o = &r.out[(bh * c.q_len + i) * Dv];
        for (int64_t j = first; j < visible; ++j)
          for (int64_t d = 0; d < Dv; ++d) o[d] += z[j] * p[j] * v.at(b, h, j, d);
        double delta = 0;
        for (int64_t d = 0; d < Dv; ++d) delta += dout.at(b, h, i, d) * o[d];
        for (int64_t j = first; j < visible; ++j) {
          double dpj = 0;  // dL/dp_j: the forward multiplied p_j by z_j
          for (int64_t d = 0; d < Dv; ++d) dpj += dout.at(b, h, i, d) * v.at(b, h, j, d);
          dpj *= z[j];
          const double ds = c.activation == ScoreActivation::kSoftmax
                                ? p[j] * (dpj - delta)
                                : activation_dscore(c.activation, s[j], dpj, inv_div);
          for (int64_t d = 0; d < D; ++d) {
            r.dq[(bh * c.q_len + i) * D + d] += scale * ds * k.at(b, h, j, d);
            r.dk[(bh * c.k_len + j) * D + d] += scale * ds * q.at(b, h, i, d);
          }
          for (int64_t d = 0; d < Dv; ++d) r.dv[(bh * c.k_len + j) * Dv + d] += z[j] * p[j] * dout.at(b, h, i, d);
        }
      }
    }
  }
  return r;
}

template <typename T, int kDk, int kDv, typename Activation, bool kBanded>
void run_kernels(const Case& c, QuadraticParams& p, Activation act) {
  using namespace actattn::cuda;
  const unsigned bh = static_cast<unsigned>(c.batch * c.heads);
  emulation::launch(dim3(bh, blocks_for(c.q_len, quadratic_forward_tc::kBlockRows)), 128,
                    [&] { quadratic_forward_tc::forward_kernel<T, Activation, kBanded, kDk, kDv>(p, act); });
}

template <typename T, int kDk, int kDv, typename Activation, bool kBanded, bool kCompact>
void run_key_grads(const Case& c, const QuadraticParams& p, Activation act) {
  using namespace actattn::cuda;
  emulation::launch(
      dim3(static_cast<unsigned>(c.batch * c.heads),
           blocks_for(c.k_len, quadratic_backward_tc::key_grads_block_rows<kDk, kDv>())),
      quadratic_backward_tc::key_grads_threads<kDk, kDv>(),
      [&] { quadratic_backward_tc::key_grads_kernel<T, Activation, kBanded, kDk, kDv, kCompact>(p, act); });
}

// dK and dV into p's gradients in the tiles the case asks for, and, for a compact case, into
// `full_tiles`' in the full tiles; then dQ.
template <typename T, int kDk, int kDv, typename Activation, bool kBanded, bool kCompact>
void run_backward(const Case& c, const QuadraticParams& p, const QuadraticParams& full_tiles, Activation act) {
  using namespace actattn::cuda;
  const unsigned bh = static_cast<unsigned>(c.batch * c.heads);
  if constexpr (kCompact) {
    run_key_grads<T, kDk, kDv, Activation, kBanded, true>(c, p, act);
    run_key_grads<T, kDk, kDv, Activation, kBanded, false>(c, full_tiles, act);
  } else {
    run_key_grads<T, kDk, kDv, Activation, kBanded, false>(c, p, act);
  }
  emulation::launch(dim3(bh, blocks_for(c.q_len, quadratic_backward_tc::kBlockRows)), quadratic_backward_tc::kThreads,
                    [&] { quadratic_backward_tc::query_grads_kernel<T, Activation, kBanded, kDk, kDv>(p, act); });
}

template <typename T, int kDk, int kDv, typename Activation, bool kBanded, bool kCompact>
bool check_case(const Case& c, std::mt19937& gen) {
  auto q = random_tensor<T>(c.batch, c.heads, c.q_len, kDk, c.interleaved, gen);
  auto k = random_tensor<T>(c.batch, c.heads, c.k_len, kDk, c.interleaved, gen);
  auto v = random_tensor<T>(c.batch, c.heads, c.k_len, kDv, c.interleaved, gen);
  auto dout = random_tensor<T>(c.batch, c.heads, c.q_len, kDv, c.interleaved, gen);
  EmulatedTensor<T> out(c.batch, c.heads, c.q_len, kDv, c.interleaved);
  EmulatedTensor<T> dq(c.batch, c.heads, c.q_len, kDk, c.interleaved), dk(c.batch, c.heads, c.k_len, kDk, c.interleaved);
  EmulatedTensor<T> dv(c.batch, c.heads, c.k_len, kDv, c.interleaved);
  // Padding keys hold NaN: they must never reach a product.
  std::vector<int64_t> lengths(c.batch, c.k_len);
  if (c.padded) {
    for (int64_t b = 0; b < c.batch; ++b) lengths[b] = (b * 37 + c.k_len / 2) % (c.k_len + 1);
    lengths[0] = 0;
    for (int64_t b = 0; b < c.batch; ++b)
      for (int64_t h = 0; h < c.heads; ++h)
        for (int64_t j = lengths[b]; j < c.k_len; ++j) {
          for (int64_t d = 0; d < kDk; ++d) k.data[k.offset(b, h, j) + d] = T(NAN);
          for (int64_t d = 0; d < kDv; ++d) v.data[v.offset(b, h, j) + d] = T(NAN);
        }
  }
  const double scale = 1.0 / std::sqrt(double(kDk));
  const Reference ref = reference(c, q, k, v, dout, lengths, scale);

  std::vector<float> lse(c.batch * c.heads * c.q_len), delta(lse.size());
  QuadraticParams p;
  p.activation = c.activation;
  p.causal = c.causal;
  p.causal_bottom_right = c.bottom_right;
  p.shape = AttentionShape{c.batch, c.heads, c.q_len, c.k_len, kDk, kDv};
  p.scale = scale;
  // The op's defaults (csrc/op_options.cpp): sigmoid's bias -log(n), relu's divisor n.
  p.bias_follows_keys = c.activation == ScoreActivation::kSigmoid;
  p.divisor_follows_keys = c.activation == ScoreActivation::kRelu;
  p.key_lengths = c.padded ? lengths.data() : nullptr;
  p.dropout_p = c.dropout_p;
  p.dropout_seed = &kDropoutSeed;
  p.window_left = c.window_left;
  p.window_right = c.window_right;
  p.q = q.view();
  p.k = k.view();
  p.v = v.view();
  p.out = out.view();
  p.log_sum_exp.data = lse.data();
  p.delta.data = delta.data();
  p.grad_out = dout.view();
  p.grad_q = dq.view();
  p.grad_k = dk.view();
  p.grad_v = dv.view();
  QuadraticParams full_tiles = p;
  EmulatedTensor<T> dk_full = dk, dv_full = dv;
  full_tiles.grad_k = dk_full.view();
  full_tiles.grad_v = dv_full.view();

  if (p.banded() != kBanded || c.compact != kCompact) {
    std::printf("FAIL %s: Case::kernels() disagrees with the case's parameters\n", c.name().c_str());
    return false;
  }
  const Activation activation{};
  run_kernels<T, kDk, kDv, Activation, kBanded>(c, p, activation);
  // delta_i = dO_i . O_i from the kernel's own output, as the generic delta kernel computes it.
  for (int64_t b = 0; b < c.batch; ++b)
    for (int64_t h = 0; h < c.heads; ++h)
      for (int64_t i = 0; i < c.q_len; ++i) {
        double sum = 0;
        for (int64_t d = 0; d < kDv; ++d) sum += dout.at(b, h, i, d) * out.at(b, h, i, d);
        delta[(b * c.heads + h) * c.q_len + i] = static_cast<float>(sum);
      }
  run_backward<T, kDk, kDv, Activation, kBanded, kCompact>(c, p, full_tiles, activation);

  double lse_err = 0;
  for (size_t i = 0; i < lse.size(); ++i) {
    if (c.activation != ScoreActivation::kSoftmax) break;
    const bool both_empty = std::isinf(ref.lse[i]) && std::isinf(lse[i]) && lse[i] < 0;
    if (!both_empty) lse_err = std::max(lse_err, std::abs(lse[i] - ref.lse[i]));
  }
  // bfloat16 keeps 8 significant bits, float16 11: P and the outputs are rounded to them, and gradients
  // sum many such terms (measured: under 8e-3 and 8e-4). Index or mask errors show as O(1) errors or NaN.
  const double tol = std::is_same_v<T, __half> ? 2e-3 : 1.5e-2;
  // dq and dk relative to at least 1e-2: inputs are standard normal, so the score-gradient terms are O(1)
  // and every case's true dq, dk are far above it, except where they cancel to exactly 0.
  const double errors[] = {relative_error(out, ref.out), relative_error(dq, ref.dq, 1e-2),
                           relative_error(dk, ref.dk, 1e-2), relative_error(dv, ref.dv)};
  bool ok = lse_err <= 1e-2;
  for (double e : errors) ok = ok && e <= tol;
  // The compact tiles form the same products in the same order as the full ones.
  const bool same_bits = !c.compact || (std::memcmp(dk.data.data(), dk_full.data.data(), dk.data.size() * sizeof(T)) == 0 &&
                                        std::memcmp(dv.data.data(), dv_full.data.data(), dv.data.size() * sizeof(T)) == 0);
  ok = ok && same_bits;
  std::printf("%-4s %-62s out %.1e dq %.1e dk %.1e dv %.1e lse %.1e%s\n", ok ? "ok" : "FAIL", c.name().c_str(),
              errors[0], errors[1], errors[2], errors[3], lse_err, same_bits ? "" : " (compact != full tiles)");
  return ok;
}

constexpr Case mla(Case c) {  // Dv = 128 beside the case's Dk = 192
  c.v_dim = 128;
  return c;
}

// Every case of the plain build.
constexpr std::vector<Case> plain_cases() {
  std::vector<Case> cases;
  const ScoreActivation acts[] = {ScoreActivation::kSoftmax, ScoreActivation::kSigmoid, ScoreActivation::kRelu};
  for (ScoreActivation act : acts) {
    for (bool causal : {false, true}) {
      cases.push_back({1, 2, 70, 70, 64, act, causal, false, false, false});   // tile edges
      cases.push_back({2, 1, 65, 130, 64, act, causal, true, true, false});    // Nq != Nk, padding, strides
      cases.push_back({1, 1, 130, 33, 128, act, causal, false, false, false}); // D = 128, Nq > Nk
    }
  }
  for (ScoreActivation act : acts) {
    // Bottom-right causal: decoding a few queries against a padded cache; more queries than keys (the
    // first rows see no key).
    cases.push_back({2, 1, 17, 130, 64, act, true, true, true, false, true});
    cases.push_back({1, 2, 130, 33, 128, act, true, false, false, false, true});
  }
  for (ScoreActivation act : acts) {
    // Dropout: every kernel regenerates the same factors (pairs of keys per draw in the forward and dQ
    // kernels, one draw per pair in the dK, dV kernel); a padded, causal case and a D = 128 one.
    cases.push_back({2, 1, 65, 130, 64, act, true, true, true, false, false, 0.3});
    cases.push_back({1, 2, 70, 70, 128, act, false, false, false, false, false, 0.5});
  }
  for (ScoreActivation act : acts) {
    // Sliding windows: inside one key tile, across tiles with causal (whole tiles skipped), and two-sided
    // bottom-right against a padded cache; with dropout in one.
    cases.push_back({1, 2, 130, 130, 64, act, false, false, false, false, false, 0.0, 5, 3});
    cases.push_back({2, 1, 200, 200, 128, act, true, true, true, false, false, 0.2, 70, -1});
    cases.push_back({2, 1, 40, 150, 64, act, false, true, false, false, true, 0.0, 20, 10});
  }
  for (ScoreActivation act : acts) {
    // D = 32 and 96: a row of 4 or 12 16-byte copies (12 does not divide the block's 128 threads), one
    // column group of dK, dV per warp; edges, padding, strides, bottom-right causal, dropout, windows.
    cases.push_back({2, 1, 65, 130, 32, act, true, true, true, false});
    cases.push_back({1, 1, 130, 33, 96, act, false, false, false, false});
    cases.push_back({2, 1, 40, 100, 96, act, true, true, true, false, true, 0.3});
  }
  cases.push_back({1, 2, 100, 100, 96, ScoreActivation::kSoftmax, true, false, false, false, false, 0.0, 40, -1});
  cases.push_back({1, 2, 70, 70, 32, ScoreActivation::kSigmoid, false, false, false, true});  // float16
  cases.push_back({2, 2, 64, 64, 64, ScoreActivation::kSoftmax, true, true, false, true});  // float16
  cases.push_back({1, 1, 1, 1, 128, ScoreActivation::kSoftmax, false, false, true, true});
  // The dK/dV kernel's compact tiles (sm_86 / 89): D = 128 (32-query tiles) and 256 (one buffer); edges,
  // bottom-right causal; window, padding, strides, dropout.
  cases.push_back({1, 2, 130, 33, 128, ScoreActivation::kSoftmax, true, false, false, false, true, 0.0, -1, -1, true});
  cases.push_back({2, 1, 200, 200, 128, ScoreActivation::kSigmoid, true, true, true, false, false, 0.2, 70, -1, true});
  // D = 256 (Q read from shared memory in the forward and dQ kernels; the dK/dV kernel's 16-key blocks
  // of four column groups): tile edges, padding, strides, bottom-right causal, dropout, a window; float16.
  cases.push_back({1, 2, 70, 70, 256, ScoreActivation::kSoftmax, false, false, false, false});
  cases.push_back({2, 1, 65, 130, 256, ScoreActivation::kSigmoid, true, true, true, false, true, 0.3});
  cases.push_back({1, 1, 130, 33, 256, ScoreActivation::kRelu, true, false, false, true});
  cases.push_back({1, 1, 100, 100, 256, ScoreActivation::kSoftmax, true, false, false, false, false, 0.0, 40, -1});
  cases.push_back({1, 2, 130, 70, 256, ScoreActivation::kSoftmax, true, false, false, false, false, 0.0, -1, -1, true});
  cases.push_back({2, 1, 200, 90, 256, ScoreActivation::kSigmoid, false, true, true, true, false, 0.2, 70, -1, true});
  // (Dk, Dv) = (192, 128): Q read from shared memory with 64-key tiles in the forward, 32-key tiles in
  // the dQ kernel, two column groups of 96 dK and 64 dV columns; tile edges, padding, strides, causal
  // and bottom-right causal, dropout, a window, float16, and the compact tiles (bit for bit).
  for (ScoreActivation act : acts) {
    cases.push_back(mla({1, 2, 70, 70, 192, act, false, false, false, false}));
    cases.push_back(mla({2, 1, 65, 130, 192, act, true, true, true, false, true, 0.3}));
  }
  cases.push_back(mla({1, 1, 130, 33, 192, ScoreActivation::kSoftmax, true, false, false, true}));
  cases.push_back(mla({2, 1, 200, 200, 192, ScoreActivation::kSoftmax, true, true, true, false, false, 0.2, 70, -1, true}));
  cases.push_back(mla({3, 1, 130, 70, 192, ScoreActivation::kRelu, false, true, false, true, false, 0.0, -1, -1, true}));

  return cases;
}

// The ThreadSanitizer build's cases (TSan makes a case 20-100x slower), which between them launch every
// kernel (the forward, dQ and dK/dV) at D = 32, 64 and 128, at D = 96 (whose tile loads
// are dealt out differently), at D = 256 (Q from shared memory, 16-key dK/dV blocks) and at (Dk, Dv) =
// (192, 128); the dK/dV kernel's compact tiles of sm_86/89 at D = 128, 256 and (192, 128) (at 256 two
// query tiles walk through one buffer: a barrier between a tile's last reads and the next copy into it);
// causal and not, dropout, padding and strides. With each barrier of the tensor-core kernels deleted in
// turn, TSan reports a race in at least one of these cases (tools/barrier_mutants.sh --tsan).
constexpr std::vector<Case> tsan_cases() {
  using A = ScoreActivation;
  return {
      {1, 2, 70, 70, 64, A::kSoftmax, true, false, false, false},
      {1, 1, 130, 33, 128, A::kSoftmax, false, false, false, false},
      {2, 1, 65, 130, 64, A::kRelu, true, true, true, false, false, 0.3},
      {2, 1, 40, 100, 96, A::kSoftmax, true, true, true, false, true, 0.3},
      {1, 2, 130, 33, 128, A::kSoftmax, true, false, false, false, true, 0.0, -1, -1, true},
      {1, 1, 130, 33, 256, A::kRelu, true, false, false, true},
      {2, 1, 200, 90, 256, A::kSigmoid, false, true, true, true, false, 0.2, 70, -1, true},
      mla({2, 1, 65, 130, 192, A::kSigmoid, true, true, true, false, true, 0.3}),
      mla({3, 1, 130, 70, 192, A::kRelu, false, true, false, true, false, 0.0, -1, -1, true}),
      {1, 2, 70, 70, 32, A::kSoftmax, true, false, false, false},
      {2, 1, 65, 130, 32, A::kSigmoid, false, true, true, false, true, 0.3},
  };
}

constexpr auto kCases = actattn::emulation_test::cases_of_this_build<plain_cases, tsan_cases>();

template <ScoreActivation kActivation>
using Score = std::conditional_t<
    kActivation == ScoreActivation::kSoftmax, actattn::SoftmaxScore<float, actattn::FastMath>,
    std::conditional_t<kActivation == ScoreActivation::kSigmoid, actattn::SigmoidScore<float, actattn::FastMath>,
                       actattn::ReluScore<float, actattn::FastMath>>>;

}  // namespace

int main(int argc, char** argv) {
  return actattn::emulation_test::run_cases<kCases>(argc, argv, [](auto kernels, const Case& c, std::mt19937& gen) {
    constexpr Case::Kernels k = decltype(kernels)::value;
    using T = std::conditional_t<k.half, __half, __nv_bfloat16>;
    return check_case<T, k.dk, k.dv, Score<k.activation>, k.banded, k.compact>(c, gen);
  });
}
