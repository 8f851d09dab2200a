#include "options.h"

#include <c10/util/Exception.h>

#include <algorithm>
#include <cmath>

namespace actattn {

ScoreActivation parse_score_activation(c10::string_view name) {
  if (name == "softmax") return ScoreActivation::kSoftmax;
  if (name == "sigmoid") return ScoreActivation::kSigmoid;
  if (name == "relu") return ScoreActivation::kRelu;
  TORCH_CHECK_VALUE(false, "actattn: activation must be one of 'softmax', 'sigmoid', 'relu'; got '", name, "'");
}

FeatureMapKind parse_feature_map(c10::string_view name) {
  if (name == "identity") return FeatureMapKind::kIdentity;
  if (name == "relu") return FeatureMapKind::kRelu;
  if (name == "elu") return FeatureMapKind::kElu;
  TORCH_CHECK_VALUE(false, "actattn: feature_map must be one of 'identity', 'relu', 'elu'; got '", name, "'");
}

at::ScalarType accumulation_dtype(at::ScalarType input) {
  return input == at::kDouble ? at::kDouble : at::kFloat;
}

ScoreConstants resolve_score_constants(ScoreActivation activation, int64_t k_len, int64_t qk_dim,
                                       std::optional<double> scale, std::optional<double> bias,
                                       std::optional<double> divisor) {
  // max(k_len, 1): an empty key set has no scores, and the defaults must stay finite.
  const double keys = static_cast<double>(std::max<int64_t>(k_len, 1));
  ScoreConstants c;
  c.scale = scale.value_or(1.0 / std::sqrt(static_cast<double>(qk_dim)));
  c.bias = bias.value_or(activation == ScoreActivation::kSigmoid ? -std::log(keys) : 0.0);
  c.divisor = divisor.value_or(activation == ScoreActivation::kRelu ? keys : 1.0);
  c.bias_follows_keys = !bias && activation == ScoreActivation::kSigmoid;
  c.divisor_follows_keys = !divisor && activation == ScoreActivation::kRelu;
  return c;
}

double resolve_linear_scale(int64_t qk_dim, std::optional<double> scale) {
  return scale.value_or(1.0 / std::sqrt(static_cast<double>(qk_dim)));
}

}  // namespace actattn
