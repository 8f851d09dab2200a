// Each op's scalar options, described once.
//
// ACTATTN_ATTENTION_OPTIONS / ACTATTN_LINEAR_OPTIONS list every scalar option of quadratic and linear
// attention in schema order as X(C++ parameter type, name, schema type, schema default), and
// ACTATTN_ATTENTION_INPUTS the optional tensors that follow them in quadratic attention's ops. Every place
// that names the options one by one expands these lists instead: the schemas (registration.cpp), the
// C++ signatures of every op (ops.h), the calls through the dispatcher (ops.cpp, actattn_api.cpp), the
// backend and meta kernels (op_runners.h, meta_ops.cpp), autograd's saved options (autograd.cpp) and
// autocast (autocast.cpp).
// Each kernel parses the raw options once into an AttentionSpec / LinearSpec (validated, names turned
// into enums; checks.h: check_attention_call / check_linear_call), and everything after that — checks,
// params, kernels — takes the parsed form.
// Autograd saves and restores the optional tensors by position (autograd.cpp).
//
// Adding a scalar option: a line in the list, a field and its validation below (op_options.cpp), the
// kernels' field in kernels/params.h and its use, the public C++ options (python/actattn/include/actattn/actattn.h),
// and the Python function (functional.py) with its reference (reference.py).
#pragma once

#include <ATen/core/Tensor.h>
#include <c10/util/string_view.h>

#include <optional>

#include "../kernels/params.h"

#define ACTATTN_ATTENTION_OPTIONS(X)                   \
  X(c10::string_view, activation, "str", "\"softmax\"") \
  X(bool, causal, "bool", "False")                      \
  X(std::optional<double>, scale, "float?", "None")     \
  X(std::optional<double>, bias, "float?", "None")      \
  X(std::optional<double>, divisor, "float?", "None")   \
  X(c10::string_view, causal_alignment, "str", "\"top_left\"") \
  X(double, dropout_p, "float", "0.0")                          \
  X(int64_t, window_left, "int", "-1")                          \
  X(int64_t, window_right, "int", "-1")

// key_lengths: (batch,) int keys per sequence, the rest padding. dropout_seed: one int64 on the inputs'
// device keying dropout's generator (kernels/dropout.h), needed when dropout_p > 0; the public APIs
// (functional.py, actattn.h) draw it from the torch generator, so the ops themselves are deterministic.
#define ACTATTN_ATTENTION_INPUTS(X)                           \
  X(const OptionalTensor&, key_lengths, "Tensor?", "None") \
  X(const OptionalTensor&, dropout_seed, "Tensor?", "None")

#define ACTATTN_LINEAR_OPTIONS(X)                    \
  X(c10::string_view, feature_map, "str", "\"elu\"") \
  X(bool, causal, "bool", "False")                   \
  X(bool, normalize, "bool", "True")                 \
  X(double, eps, "float", "1e-06")                   \
  X(std::optional<double>, scale, "float?", "None")

// Expanders: ", type name" (parameter lists), ", name" (argument lists), schema text with or without
// defaults. Each starts with a comma, so they follow the tensors q, k, v.
#define ACTATTN_PARAM(type, name, schema_type, schema_default) , type name
#define ACTATTN_ARG(type, name, schema_type, schema_default) , name
#define ACTATTN_SCHEMA(type, name, schema_type, schema_default) ", " schema_type " " #name
#define ACTATTN_SCHEMA_WITH_DEFAULT(type, name, schema_type, schema_default) \
  ", " schema_type " " #name "=" schema_default

namespace actattn {

using OptionalTensor = std::optional<at::Tensor>;

// Head dims from 1 to kMaxHeadDim are supported (the CUDA kernels keep a row of q in registers).
constexpr int64_t kMaxHeadDim = 256;

// float64 accumulates in float64; every other floating type in float32.
at::ScalarType accumulation_dtype(at::ScalarType input);

// Quadratic attention's options of one call, validated; defaults that need the tensors' sizes are applied by
// quadratic_params.
struct AttentionSpec {
  ScoreActivation activation = ScoreActivation::kSoftmax;
  bool causal = false;
  bool causal_bottom_right = false;  // causal_alignment="bottom_right"
  std::optional<double> scale;
  std::optional<double> bias;
  std::optional<double> divisor;
  double dropout_p = 0.0;
  int64_t window_left = -1, window_right = -1;  // sliding window; -1: unbounded on that side

  bool softmax() const { return activation == ScoreActivation::kSoftmax; }
};

struct LinearSpec {
  FeatureMapKind feature_map = FeatureMapKind::kElu;
  bool causal = false;
  bool normalize = true;
  double eps = 1e-6;
  std::optional<double> scale;
};

// Names to enums and every check that needs no tensor: finite numbers, positive divisor and eps, no
// bias or divisor with softmax, dropout_p in [0, 1], window sides >= -1 (causal: right 0 or -1). Raises ValueError naming the option.
// `op` names the op in messages ("actattn.attention", "actattn.attention backward").
AttentionSpec parse_attention_options(const char* op ACTATTN_ATTENTION_OPTIONS(ACTATTN_PARAM));
LinearSpec parse_linear_options(const char* op ACTATTN_LINEAR_OPTIONS(ACTATTN_PARAM));

// The kernels' params of a call with defaults applied (scale 1/sqrt(Dk); sigmoid's bias -log Nk and
// relu's divisor Nk, per sequence when key lengths are given), from the kernel inputs (already widened
// on the CPU: their dtype is the kernels' element type). Tensor views are left for the caller.
QuadraticParams quadratic_params(const AttentionSpec& spec, const at::Tensor& q, const at::Tensor& k,
                                 const at::Tensor& v);
LinearParams linear_params(const LinearSpec& spec, const at::Tensor& q, const at::Tensor& k,
                           const at::Tensor& v);

}  // namespace actattn
