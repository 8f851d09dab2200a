#include "op_options.h"

#include <c10/util/Exception.h>

#include <algorithm>
#include <cmath>

#include "names.h"
#include "tensor_views.h"

namespace actattn {
namespace {

void check_finite(const char* op, const char* name, std::optional<double> value) {
  TORCH_CHECK_VALUE(!value || std::isfinite(*value), op, ": ", name, " must be finite, got ", *value);
}

double default_scale(int64_t qk_dim, std::optional<double> scale) {
  return scale.value_or(1.0 / std::sqrt(static_cast<double>(qk_dim)));
}

}  // namespace

at::ScalarType accumulation_dtype(at::ScalarType input) {
  return input == at::kDouble ? at::kDouble : at::kFloat;
}

AttentionSpec parse_attention_options(const char* op, c10::string_view activation, bool causal,
                                      std::optional<double> scale, std::optional<double> bias,
                                      std::optional<double> divisor, c10::string_view causal_alignment,
                                      double dropout_p, int64_t window_left, int64_t window_right) {
  AttentionSpec spec;
  spec.activation = parse_score_activation(activation);
  spec.causal = causal;
  spec.causal_bottom_right = parse_causal_alignment(causal_alignment) == CausalAlignment::kBottomRight;
  check_finite(op, "scale", scale);
  check_finite(op, "bias", bias);
  check_finite(op, "divisor", divisor);
  TORCH_CHECK_VALUE(!divisor || *divisor > 0, op, ": divisor must be positive, got ", *divisor);
  if (spec.softmax()) {
    TORCH_CHECK_VALUE(!bias, op, ": bias must be None with activation='softmax' (softmax is invariant to it), got ",
                      *bias);
    TORCH_CHECK_VALUE(!divisor, op,
                      ": divisor must be None with activation='softmax' (softmax normalises itself), got ", *divisor);
  }
  spec.scale = scale;
  spec.bias = bias;
  spec.divisor = divisor;
  // p = 1 drops every weight (a zero output, as torch's dropout); p = 0 is no dropout.
  TORCH_CHECK_VALUE(dropout_p >= 0.0 && dropout_p <= 1.0, op, ": dropout_p must be in [0, 1], got ", dropout_p);
  spec.dropout_p = dropout_p;
  TORCH_CHECK_VALUE(window_left >= -1 && window_right >= -1, op,
                    ": window sides must be >= 0, or -1 (None) for unbounded; got window=(", window_left, ", ",
                    window_right, ")");
  TORCH_CHECK_VALUE(!causal || window_right <= 0, op, ": causal=True sees no later key, so the window's right side ",
                    "must be 0 or None; got ", window_right);
  spec.window_left = window_left;
  spec.window_right = window_right;
  return spec;
}

LinearSpec parse_linear_options(const char* op, c10::string_view feature_map, bool causal, bool normalize,
                                double eps, std::optional<double> scale) {
  LinearSpec spec;
  spec.feature_map = parse_feature_map(feature_map);
  spec.causal = causal;
  spec.normalize = normalize;
  // eps = 0 would divide by zero wherever phi(q) . z vanishes (a relu map that zeroes a query).
  TORCH_CHECK_VALUE(std::isfinite(eps) && eps > 0, op, ": eps must be finite and > 0, got ", eps);
  spec.eps = eps;
  check_finite(op, "scale", scale);
  spec.scale = scale;
  return spec;
}

QuadraticParams quadratic_params(const AttentionSpec& spec, const at::Tensor& q, const at::Tensor& k,
                                 const at::Tensor& v) {
  QuadraticParams p;
  p.dtype = scalar_kind(q.scalar_type());
  p.activation = spec.activation;
  p.causal = spec.causal;
  p.causal_bottom_right = spec.causal_bottom_right;
  p.dropout_p = spec.dropout_p;
  p.window_left = spec.window_left;
  p.window_right = spec.window_right;
  p.shape = attention_shape(q, k, v);
  // max(k_len, 1): an empty key set has no scores, and the defaults must stay finite.
  const double keys = static_cast<double>(std::max<int64_t>(p.shape.k_len, 1));
  p.scale = default_scale(p.shape.qk_dim, spec.scale);
  p.bias = spec.bias.value_or(spec.activation == ScoreActivation::kSigmoid ? -std::log(keys) : 0.0);
  p.divisor = spec.divisor.value_or(spec.activation == ScoreActivation::kRelu ? keys : 1.0);
  // Defaults that depend on the number of keys follow each sequence's own key count (key_lengths.h).
  p.bias_follows_keys = !spec.bias && spec.activation == ScoreActivation::kSigmoid;
  p.divisor_follows_keys = !spec.divisor && spec.activation == ScoreActivation::kRelu;
  return p;
}

LinearParams linear_params(const LinearSpec& spec, const at::Tensor& q, const at::Tensor& k, const at::Tensor& v) {
  LinearParams p;
  p.dtype = scalar_kind(q.scalar_type());
  p.feature_map = spec.feature_map;
  p.causal = spec.causal;
  p.normalize = spec.normalize;
  p.shape = attention_shape(q, k, v);
  p.scale = default_scale(p.shape.qk_dim, spec.scale);
  p.eps = spec.eps;
  return p;
}

}  // namespace actattn
