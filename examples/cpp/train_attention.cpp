// Trains one causal self-attention layer built on actattn to output the running mean of a fixed linear
// map of its inputs, y_i = (1 / (i + 1)) sum_{j <= i} A x_j, and prints the loss as it falls.
//
//   train_attention [--kind softmax|sigmoid|relu|linear-identity|linear-relu|linear-elu] [--steps N] [--seed S]
//
// The task needs attention (each output mixes every earlier input) and suits every kind: equal weights over
// the visible keys are what softmax gives with constant scores, and what normalised linear attention gives
// with constant features; sigmoid and relu scores are not normalised per row, so they cannot weight row i
// by exactly 1 / (i + 1) and stop higher. Exits 1 unless the mean loss of the last 10 % of steps is below
// 3/4 of the first step's.
#include <actattn/actattn.h>
#include <torch/torch.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <stdexcept>
#include <string>

namespace {

struct Kind {
  bool linear;
  std::string function;  // the score activation, or the feature map of a linear kind
  bool normalize;
};

Kind parse_kind(const std::string& name) {
  if (name == "softmax" || name == "sigmoid" || name == "relu") return {false, name, true};
  if (name == "linear-identity") return {true, "identity", false};  // identity can cross zero: unnormalised
  if (name == "linear-relu") return {true, "relu", true};
  if (name == "linear-elu") return {true, "elu", true};
  throw std::invalid_argument("unknown kind '" + name +
                              "'; one of softmax, sigmoid, relu, linear-identity, linear-relu, linear-elu");
}

struct CausalSelfAttentionImpl : torch::nn::Module {
  CausalSelfAttentionImpl(int64_t dim, int64_t heads, Kind kind)
      : heads(heads),
        kind(std::move(kind)),
        qkv(register_module("qkv", torch::nn::Linear(dim, 3 * dim))),
        out(register_module("out", torch::nn::Linear(dim, dim))) {}

  torch::Tensor forward(const torch::Tensor& x) {  // (B, N, dim) -> (B, N, dim)
    const int64_t batch = x.size(0), length = x.size(1), dim = x.size(2);
    auto parts = qkv(x).view({batch, length, 3, heads, dim / heads}).permute({2, 0, 3, 1, 4});
    const auto q = parts[0], k = parts[1], v = parts[2];  // (B, H, N, D) views, any strides accepted
    const torch::Tensor mixed =
        kind.linear ? actattn::linear_attention(q, k, v, {.feature_map = kind.function, .causal = true,
                                                          .normalize = kind.normalize})
                          .out
                    : actattn::attention(q, k, v, {.activation = kind.function, .causal = true});
    return out(mixed.transpose(1, 2).reshape({batch, length, dim}));
  }

  int64_t heads;
  Kind kind;
  torch::nn::Linear qkv, out;
};
TORCH_MODULE(CausalSelfAttention);

std::string option(int argc, char** argv, const std::string& name, const std::string& fallback) {
  for (int i = 1; i + 1 < argc; ++i) {
    if (argv[i] == name) return argv[i + 1];
  }
  return fallback;
}

}  // namespace

int train(int argc, char** argv) {
  const std::string kind_name = option(argc, argv, "--kind", "softmax");
  const int steps = std::stoi(option(argc, argv, "--steps", "300"));
  if (steps < 1) throw std::invalid_argument("--steps must be at least 1");
  torch::manual_seed(std::stoll(option(argc, argv, "--seed", "0")));
  const int64_t batch = 16, length = 32, dim = 32, heads = 4;

  CausalSelfAttention layer(dim, heads, parse_kind(kind_name));
  torch::optim::Adam optimizer(layer->parameters(), torch::optim::AdamOptions(1e-2));
  const auto map = torch::randn({dim, dim}) / std::sqrt(double(dim));
  const auto counts = torch::arange(1, length + 1, torch::kFloat).view({1, length, 1});

  double first = 0, last = 0, tail_sum = 0;
  const int tail_start = steps - std::max(1, steps / 10);
  for (int step = 0; step < steps; ++step) {
    const auto x = torch::randn({batch, length, dim});
    const auto target = x.matmul(map).cumsum(1) / counts;
    const auto loss = torch::mse_loss(layer->forward(x), target);
    optimizer.zero_grad();
    loss.backward();
    optimizer.step();
    last = loss.item<double>();
    if (step == 0) first = last;
    if (step >= tail_start) tail_sum += last;
    if (step % 50 == 0 || step + 1 == steps) std::printf("%-16s step %4d  loss %.5f\n", kind_name.c_str(), step, last);
  }
  const double tail = tail_sum / (steps - tail_start);
  const bool fell = tail < 0.75 * first;
  std::printf("%s: loss %.5f at the first step, %.5f over the last 10 %% of steps (%s)\n", kind_name.c_str(), first,
              tail, fell ? "fell" : "did NOT fall below 3/4 of the first");
  return fell ? EXIT_SUCCESS : EXIT_FAILURE;
}

int main(int argc, char** argv) {
  try {
    return train(argc, argv);
  } catch (const std::exception& error) {  // bad options, and actattn's own errors on bad input
    std::fprintf(stderr, "train_attention: %s\n", error.what());
    return 2;
  }
}
