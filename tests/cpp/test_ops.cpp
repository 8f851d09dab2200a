// C++ test, run by CTest: the ops and their backward from LibTorch, checked against plain ATen math.
// Prints "N passed, N failed" and exits non-zero on any failure.
#include <actattn/actattn.h>
#include <ATen/autocast_mode.h>
#include <torch/torch.h>

#include <cmath>
#include <functional>
#include <iostream>
#include <string>
#include <vector>

namespace {

int passed = 0, failed = 0;

void check(const std::string& name, bool ok, const std::string& detail = "") {
  (ok ? passed : failed)++;
  std::cout << (ok ? "PASS " : "FAIL ") << name << (detail.empty() ? "" : ": " + detail) << "\n";
}

bool close(const at::Tensor& a, const at::Tensor& b, double tol = 1e-10) {
  return a.sizes() == b.sizes() && at::allclose(a, b, tol, tol);
}

at::Tensor reference_attention(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                               const std::string& activation, bool causal) {
  const double scale = 1.0 / std::sqrt(static_cast<double>(q.size(-1)));
  const double keys = static_cast<double>(k.size(-2));
  at::Tensor scores = at::matmul(q, k.transpose(-2, -1)) * scale;
  at::Tensor visible = at::ones({q.size(-2), k.size(-2)}, q.options().dtype(at::kBool)).tril();
  at::Tensor probs;
  if (activation == "softmax") {
    probs = (causal ? scores.masked_fill(visible.logical_not(), -INFINITY) : scores).softmax(-1);
  } else if (activation == "sigmoid") {
    probs = at::sigmoid(scores - std::log(keys));
  } else {
    probs = at::relu(scores) / keys;
  }
  if (causal) probs = probs * visible;
  return at::matmul(probs, v);
}

void test_attention_forward_and_backward() {
  torch::manual_seed(0);
  const auto options = torch::dtype(torch::kFloat64);
  for (const std::string activation : {"softmax", "sigmoid", "relu"}) {
    for (bool causal : {false, true}) {
      const std::string name = "attention " + activation + (causal ? " causal" : "");
      at::Tensor q = torch::randn({2, 3, 70, 8}, options).requires_grad_();
      at::Tensor k = torch::randn({2, 3, 66, 8}, options).requires_grad_();
      at::Tensor v = torch::randn({2, 3, 66, 5}, options).requires_grad_();
      at::Tensor out = actattn::attention(q, k, v, {.activation = activation, .causal = causal});
      at::Tensor expected = reference_attention(q, k, v, activation, causal);
      check(name + " forward", close(out, expected));

      at::Tensor grad_out = torch::randn_like(out);
      auto got = torch::autograd::grad({out}, {q, k, v}, {grad_out});
      auto want = torch::autograd::grad({expected}, {q, k, v}, {grad_out});
      for (size_t i = 0; i < 3; ++i) check(name + " grad " + "qkv"[i], close(got[i], want[i]));
    }
  }
}

void test_linear_attention_state_and_backward() {
  torch::manual_seed(1);
  const auto options = torch::dtype(torch::kFloat64);
  at::Tensor q = torch::randn({1, 2, 100, 4}, options).requires_grad_();
  at::Tensor k = torch::randn({1, 2, 100, 4}, options).requires_grad_();
  at::Tensor v = torch::randn({1, 2, 100, 3}, options).requires_grad_();
  const actattn::LinearAttentionOptions causal{.causal = true};

  auto whole = actattn::linear_attention(q, k, v, causal);
  using at::indexing::Slice;
  auto first = actattn::linear_attention(q.index({Slice(), Slice(), Slice(0, 40)}),
                                         k.index({Slice(), Slice(), Slice(0, 40)}),
                                         v.index({Slice(), Slice(), Slice(0, 40)}), causal);
  auto second = actattn::linear_attention(q.index({Slice(), Slice(), Slice(40, 100)}),
                                          k.index({Slice(), Slice(), Slice(40, 100)}),
                                          v.index({Slice(), Slice(), Slice(40, 100)}), causal, first.state);
  at::Tensor pieces = at::cat({first.out, second.out}, 2);
  check("linear causal pieces == whole", close(pieces, whole.out));
  check("linear final state", close(second.state.kv, whole.state.kv) &&
                                  close(second.state.normalizer, whole.state.normalizer));

  // Gradients through the carried state equal those of the single call.
  at::Tensor grad_out = torch::randn_like(whole.out);
  auto got = torch::autograd::grad({pieces}, {q, k, v}, {grad_out});
  auto want = torch::autograd::grad({whole.out}, {q, k, v}, {grad_out});
  for (size_t i = 0; i < 3; ++i) check(std::string("linear grad through state ") + "qkv"[i], close(got[i], want[i]));

  // Non-causal against ATen math: phi = elu + 1, scale 1/sqrt(Dk), normalised.
  at::Tensor a = (at::elu(q) + 1) / 2.0, b = at::elu(k) + 1;
  at::Tensor expected = at::matmul(a, at::matmul(b.transpose(-2, -1), v)) /
                        (at::matmul(a, b.sum(-2).unsqueeze(-1)) + 1e-6);
  check("linear non-causal forward", close(actattn::linear_attention(q, k, v).out, expected));
}

void test_key_lengths() {
  torch::manual_seed(2);
  const auto options = torch::dtype(torch::kFloat64);
  at::Tensor q = torch::randn({2, 2, 5, 4}, options);
  at::Tensor k = torch::randn({2, 2, 9, 4}, options);
  at::Tensor v = torch::randn({2, 2, 9, 3}, options);
  at::Tensor key_lengths = torch::tensor({9, 6}, torch::kLong);
  using at::indexing::Slice;
  for (const std::string activation : {"softmax", "sigmoid", "relu"}) {
    at::Tensor padded = actattn::attention(q, k, v, {.activation = activation, .key_lengths = key_lengths});
    at::Tensor alone = actattn::attention(q.index({Slice(1, 2)}), k.index({Slice(1, 2), Slice(), Slice(0, 6)}),
                                          v.index({Slice(1, 2), Slice(), Slice(0, 6)}), {.activation = activation});
    check("key_lengths " + activation + " == unpadded", close(padded.index({Slice(1, 2)}), alone));
  }
}

// From C++ too: a decoding step against a cache shared by grouped heads equals the full causal run, and
// autocast casts the inputs.
void test_decoding_grouped_heads_and_autocast() {
  torch::manual_seed(3);
  const auto options = torch::dtype(torch::kFloat64);
  at::Tensor q = torch::randn({1, 4, 12, 8}, options);
  at::Tensor k = torch::randn({1, 2, 12, 8}, options);
  at::Tensor v = torch::randn({1, 2, 12, 6}, options);
  using at::indexing::Slice;
  at::Tensor full = actattn::attention(q, k, v, {.causal = true});
  at::Tensor repeated = actattn::attention(q, k.repeat_interleave(2, 1), v.repeat_interleave(2, 1), {.causal = true});
  check("grouped heads == repeated heads", close(full, repeated));
  at::Tensor step = actattn::attention(q.index({Slice(), Slice(), Slice(9, 12)}), k, v,
                                       {.causal = true, .causal_alignment = "bottom_right"});
  check("bottom-right decoding step == full causal run", close(step, full.index({Slice(), Slice(), Slice(9, 12)})));

  at::autocast::set_autocast_enabled(at::kCPU, true);
  at::autocast::set_autocast_dtype(at::kCPU, at::kBFloat16);
  const at::Tensor out = actattn::attention(q.to(at::kFloat), k.to(at::kFloat), v.to(at::kFloat));
  at::autocast::set_autocast_enabled(at::kCPU, false);
  at::autocast::clear_cache();
  check("autocast casts to bfloat16", out.scalar_type() == at::kBFloat16);
}

void test_bad_input_throws() {
  at::Tensor q = torch::randn({1, 1, 4, 2});
  bool threw = false;
  try {
    actattn::attention(q, q, q, {.activation = "tanh"});
  } catch (const c10::Error& e) {
    threw = std::string(e.what()).find("activation must be one of") != std::string::npos;
  }
  check("unknown activation throws a named error", threw);
}

}  // namespace

int main() {
  test_attention_forward_and_backward();
  test_linear_attention_state_and_backward();
  test_key_lengths();
  test_decoding_grouped_heads_and_autocast();
  test_bad_input_throws();
  std::cout << passed << " passed, " << failed << " failed\n";
  return failed == 0 ? 0 : 1;
}
