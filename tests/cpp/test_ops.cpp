// GoogleTest suite of the C++ API, run by CTest: the ops and their gradients from LibTorch against plain
// ATen composites, carried state, padding, grouped heads, decoding, autocast, and the errors bad input gets.
#include <actattn/actattn.h>
#include <ATen/autocast_mode.h>
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <cmath>
#include <functional>
#include <string>
#include <tuple>

namespace {

using at::indexing::Slice;

const auto kFloat64 = torch::dtype(torch::kFloat64);

::testing::AssertionResult close(const at::Tensor& got, const at::Tensor& want, double tol = 1e-10) {
  if (got.sizes() != want.sizes()) {
    return ::testing::AssertionFailure() << "shape " << got.sizes() << " != " << want.sizes();
  }
  if (!at::allclose(got, want, tol, tol)) {
    return ::testing::AssertionFailure() << "max abs difference " << (got - want).abs().max().item<double>();
  }
  return ::testing::AssertionSuccess();
}

// The same math as python/actattn/reference.py, in ATen: the N×N weights, materialised.
at::Tensor composite_attention(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                               const std::string& activation, bool causal) {
  const double scale = 1.0 / std::sqrt(static_cast<double>(q.size(-1)));
  const double keys = static_cast<double>(k.size(-2));
  const at::Tensor scores = at::matmul(q, k.transpose(-2, -1)) * scale;
  const at::Tensor visible = at::ones({q.size(-2), k.size(-2)}, q.options().dtype(at::kBool)).tril();
  at::Tensor weights;
  if (activation == "softmax") {
    weights = (causal ? scores.masked_fill(visible.logical_not(), -INFINITY) : scores).softmax(-1);
  } else if (activation == "sigmoid") {
    weights = at::sigmoid(scores - std::log(keys));
  } else {
    weights = at::relu(scores) / keys;
  }
  if (causal) weights = weights * visible;
  return at::matmul(weights, v);
}

// c10::Error whose message contains `expected`, thrown by `call`.
::testing::AssertionResult throws_with(const std::function<void()>& call, const std::string& expected) {
  try {
    call();
  } catch (const c10::Error& error) {
    const std::string message = error.what();
    if (message.find(expected) != std::string::npos) return ::testing::AssertionSuccess();
    return ::testing::AssertionFailure() << "the message lacks '" << expected << "': " << message;
  }
  return ::testing::AssertionFailure() << "nothing was thrown (expected '" << expected << "')";
}

class AttentionVsComposite : public ::testing::TestWithParam<std::tuple<std::string, bool>> {};

TEST_P(AttentionVsComposite, ForwardAndGradients) {
  const auto& [activation, causal] = GetParam();
  torch::manual_seed(0);
  const at::Tensor q = torch::randn({2, 3, 70, 8}, kFloat64).requires_grad_();
  const at::Tensor k = torch::randn({2, 3, 66, 8}, kFloat64).requires_grad_();
  const at::Tensor v = torch::randn({2, 3, 66, 5}, kFloat64).requires_grad_();
  const at::Tensor out = actattn::attention(q, k, v, {.activation = activation, .causal = causal});
  const at::Tensor expected = composite_attention(q, k, v, activation, causal);
  EXPECT_TRUE(close(out, expected));

  const at::Tensor grad_out = torch::randn_like(out);
  const auto got = torch::autograd::grad({out}, {q, k, v}, {grad_out});
  const auto want = torch::autograd::grad({expected}, {q, k, v}, {grad_out});
  for (size_t i = 0; i < 3; ++i) EXPECT_TRUE(close(got[i], want[i])) << "gradient of " << "qkv"[i];
}

INSTANTIATE_TEST_SUITE_P(EveryActivation, AttentionVsComposite,
                         ::testing::Combine(::testing::Values("softmax", "sigmoid", "relu"), ::testing::Bool()),
                         [](const auto& info) {
                           return std::get<0>(info.param) + (std::get<1>(info.param) ? "_causal" : "");
                         });

TEST(LinearAttention, StateCarriesAcrossCallsWithGradients) {
  torch::manual_seed(1);
  const at::Tensor q = torch::randn({1, 2, 100, 4}, kFloat64).requires_grad_();
  const at::Tensor k = torch::randn({1, 2, 100, 4}, kFloat64).requires_grad_();
  const at::Tensor v = torch::randn({1, 2, 100, 3}, kFloat64).requires_grad_();
  const actattn::LinearAttentionOptions causal{.causal = true};
  const auto piece = [](const at::Tensor& t, int64_t begin, int64_t end) {
    return t.index({Slice(), Slice(), Slice(begin, end)});
  };

  const auto whole = actattn::linear_attention(q, k, v, causal);
  const auto first = actattn::linear_attention(piece(q, 0, 40), piece(k, 0, 40), piece(v, 0, 40), causal);
  const auto second =
      actattn::linear_attention(piece(q, 40, 100), piece(k, 40, 100), piece(v, 40, 100), causal, first.state);
  const at::Tensor pieces = at::cat({first.out, second.out}, 2);
  EXPECT_TRUE(close(pieces, whole.out));
  EXPECT_TRUE(close(second.state.kv, whole.state.kv));
  EXPECT_TRUE(close(second.state.normalizer, whole.state.normalizer));

  const at::Tensor grad_out = torch::randn_like(whole.out);
  const auto got = torch::autograd::grad({pieces}, {q, k, v}, {grad_out});
  const auto want = torch::autograd::grad({whole.out}, {q, k, v}, {grad_out});
  for (size_t i = 0; i < 3; ++i) EXPECT_TRUE(close(got[i], want[i])) << "gradient of " << "qkv"[i];
}

TEST(LinearAttention, NonCausalForwardAndGradientsMatchTheComposite) {
  torch::manual_seed(4);
  const at::Tensor q = torch::randn({1, 2, 50, 4}, kFloat64).requires_grad_();
  const at::Tensor k = torch::randn({1, 2, 50, 4}, kFloat64).requires_grad_();
  const at::Tensor v = torch::randn({1, 2, 50, 3}, kFloat64).requires_grad_();
  // phi = elu + 1, phi(q) scaled by 1/sqrt(Dk), normalised with eps 1e-6: the defaults.
  const at::Tensor a = (at::elu(q) + 1) / 2.0, b = at::elu(k) + 1;
  const at::Tensor expected =
      at::matmul(a, at::matmul(b.transpose(-2, -1), v)) / (at::matmul(a, b.sum(-2).unsqueeze(-1)) + 1e-6);
  const at::Tensor out = actattn::linear_attention(q, k, v).out;
  EXPECT_TRUE(close(out, expected));
  const at::Tensor grad_out = torch::randn_like(out);
  const auto got = torch::autograd::grad({out}, {q, k, v}, {grad_out});
  const auto want = torch::autograd::grad({expected}, {q, k, v}, {grad_out});
  for (size_t i = 0; i < 3; ++i) EXPECT_TRUE(close(got[i], want[i])) << "gradient of " << "qkv"[i];
}

TEST(Attention, PaddedKeysAreIgnored) {
  torch::manual_seed(2);
  const at::Tensor q = torch::randn({2, 2, 5, 4}, kFloat64);
  const at::Tensor k = torch::randn({2, 2, 9, 4}, kFloat64);
  const at::Tensor v = torch::randn({2, 2, 9, 3}, kFloat64);
  const at::Tensor key_lengths = torch::tensor({9, 6}, torch::kLong);
  for (const std::string activation : {"softmax", "sigmoid", "relu"}) {
    const at::Tensor padded = actattn::attention(q, k, v, {.activation = activation, .key_lengths = key_lengths});
    const at::Tensor alone =
        actattn::attention(q.index({Slice(1, 2)}), k.index({Slice(1, 2), Slice(), Slice(0, 6)}),
                           v.index({Slice(1, 2), Slice(), Slice(0, 6)}), {.activation = activation});
    EXPECT_TRUE(close(padded.index({Slice(1, 2)}), alone)) << activation;
  }
}

// Dropout from LibTorch: the seed comes from torch's generator (manual_seed reproduces the mask), kept
// weights of v = identity are the undropped ones / (1 - p), and p = 1 drops everything.
TEST(Attention, DropoutFollowsTheGenerator) {
  const at::Tensor q = torch::randn({1, 2, 16, 8}, kFloat64);
  const at::Tensor k = torch::randn({1, 2, 16, 8}, kFloat64);
  const at::Tensor eye = torch::eye(16, kFloat64).expand({1, 2, 16, 16});
  const at::Tensor undropped = actattn::attention(q, k, eye, {.activation = "sigmoid"});
  torch::manual_seed(4);
  const at::Tensor dropped = actattn::attention(q, k, eye, {.activation = "sigmoid", .dropout_p = 0.25});
  torch::manual_seed(4);
  EXPECT_TRUE(at::equal(dropped, actattn::attention(q, k, eye, {.activation = "sigmoid", .dropout_p = 0.25})));
  const at::Tensor kept = dropped != 0;
  const double kept_fraction = kept.to(at::kDouble).mean().item<double>();
  EXPECT_GT(kept_fraction, 0.6);
  EXPECT_LT(kept_fraction, 0.9);
  EXPECT_TRUE(close(dropped.masked_select(kept), undropped.masked_select(kept) / 0.75));
  EXPECT_TRUE(at::equal(actattn::attention(q, k, eye, {.dropout_p = 1.0}), at::zeros_like(undropped)));
}

// A causal sliding window of 3 earlier keys is softmax over the band, as a dense mask through ATen's SDPA.
TEST(Attention, SlidingWindowIsTheBandMask) {
  torch::manual_seed(5);
  const at::Tensor q = torch::randn({2, 2, 20, 8}, kFloat64);
  const at::Tensor k = torch::randn({2, 2, 20, 8}, kFloat64);
  const at::Tensor v = torch::randn({2, 2, 20, 6}, kFloat64);
  const at::Tensor i = torch::arange(20).view({-1, 1}), j = torch::arange(20).view({1, -1});
  const at::Tensor band = (j <= i).logical_and(j >= i - 3);
  EXPECT_TRUE(close(actattn::attention(q, k, v, {.causal = true, .window_left = 3}),
                    at::scaled_dot_product_attention(q, k, v, band)));
}

TEST(Attention, GroupedHeadsEqualRepeatedHeads) {
  torch::manual_seed(3);
  const at::Tensor q = torch::randn({1, 4, 12, 8}, kFloat64);
  const at::Tensor k = torch::randn({1, 2, 12, 8}, kFloat64);
  const at::Tensor v = torch::randn({1, 2, 12, 6}, kFloat64);
  EXPECT_TRUE(close(actattn::attention(q, k, v, {.causal = true}),
                    actattn::attention(q, k.repeat_interleave(2, 1), v.repeat_interleave(2, 1), {.causal = true})));
}

TEST(Attention, BottomRightDecodingStepEqualsTheFullCausalRun) {
  torch::manual_seed(3);
  const at::Tensor q = torch::randn({1, 4, 12, 8}, kFloat64);
  const at::Tensor k = torch::randn({1, 2, 12, 8}, kFloat64);
  const at::Tensor v = torch::randn({1, 2, 12, 6}, kFloat64);
  const at::Tensor full = actattn::attention(q, k, v, {.causal = true});
  const at::Tensor step = actattn::attention(q.index({Slice(), Slice(), Slice(9, 12)}), k, v,
                                             {.causal = true, .causal_alignment = "bottom_right"});
  EXPECT_TRUE(close(step, full.index({Slice(), Slice(), Slice(9, 12)})));
}

TEST(Attention, AutocastCastsToItsDtype) {
  const at::Tensor x = torch::randn({1, 2, 8, 4});
  at::autocast::set_autocast_enabled(at::kCPU, true);
  at::autocast::set_autocast_dtype(at::kCPU, at::kBFloat16);
  const at::Tensor out = actattn::attention(x, x, x);
  at::autocast::set_autocast_enabled(at::kCPU, false);
  at::autocast::clear_cache();
  EXPECT_EQ(out.scalar_type(), at::kBFloat16);
}

TEST(CpuIsa, NamesABuildOfTheCpuKernels) {
  const std::string isa = actattn::cpu_isa();
  EXPECT_TRUE(isa == "avx512" || isa == "avx2" || isa == "baseline") << isa;
}

TEST(Errors, BadOptionsAreNamed) {
  const at::Tensor x = torch::randn({1, 1, 4, 2});
  EXPECT_TRUE(throws_with([&] { actattn::attention(x, x, x, {.activation = "tanh"}); }, "activation must be one of"));
  EXPECT_TRUE(
      throws_with([&] { actattn::linear_attention(x, x, x, {.feature_map = "gelu"}); }, "feature_map must be one of"));
  EXPECT_TRUE(throws_with([&] { actattn::attention(x, x, x, {.causal = true, .causal_alignment = "middle"}); },
                          "causal_alignment must be one of"));
}

TEST(Errors, BadShapesAndTypesAreNamed) {
  const at::Tensor x = torch::randn({1, 1, 4, 2});
  EXPECT_TRUE(throws_with([&] { actattn::attention(x[0], x, x); }, "q must have 4 dimensions"));
  EXPECT_TRUE(
      throws_with([&] { actattn::attention(x, x.to(at::kDouble), x); }, "q, k and v must have the same dtype"));
  EXPECT_TRUE(throws_with([&] { actattn::attention(x.to(at::kInt), x.to(at::kInt), x.to(at::kInt)); },
                          "must be a floating-point tensor"));
  EXPECT_TRUE(throws_with([&] { actattn::attention(torch::randn({1, 3, 4, 2}), torch::randn({1, 2, 4, 2}),
                                                   torch::randn({1, 2, 4, 2})); },
                          "must be a multiple of the number of key/value heads"));
  EXPECT_TRUE(throws_with([&] { actattn::attention(x, x, x, {.key_lengths = torch::tensor({1.5})}); },
                          "key_lengths must be an int64 or int32 tensor"));
}

}  // namespace
