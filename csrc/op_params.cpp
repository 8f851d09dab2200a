#include "op_params.h"

#include "options.h"
#include "tensor_views.h"

namespace actattn {

QuadraticParams quadratic_params(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                                 c10::string_view activation, bool causal, std::optional<double> scale,
                                 std::optional<double> bias, std::optional<double> divisor) {
  QuadraticParams p;
  p.dtype = scalar_kind(q.scalar_type());
  p.activation = parse_score_activation(activation);
  p.causal = causal;
  p.shape = attention_shape(q, k, v);
  const ScoreConstants c = resolve_score_constants(p.activation, p.shape.k_len, p.shape.qk_dim, scale, bias, divisor);
  p.scale = c.scale;
  p.bias = c.bias;
  p.divisor = c.divisor;
  p.bias_follows_keys = c.bias_follows_keys;
  p.divisor_follows_keys = c.divisor_follows_keys;
  return p;
}

LinearParams linear_params(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                           c10::string_view feature_map, bool causal, bool normalize, double eps,
                           std::optional<double> scale) {
  LinearParams p;
  p.dtype = scalar_kind(q.scalar_type());
  p.feature_map = parse_feature_map(feature_map);
  p.causal = causal;
  p.normalize = normalize;
  p.shape = attention_shape(q, k, v);
  p.scale = resolve_linear_scale(p.shape.qk_dim, scale);
  p.eps = eps;
  return p;
}

}  // namespace actattn
