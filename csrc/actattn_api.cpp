#include "actattn.h"

#include <ATen/core/dispatch/Dispatcher.h>

#include "ops.h"

namespace actattn {

at::Tensor attention(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, const AttentionOptions& options) {
  static const auto op = c10::Dispatcher::singleton()
                             .findSchemaOrThrow("actattn::attention", "")
                             .typed<at::Tensor(const at::Tensor&, const at::Tensor&, const at::Tensor&,
                                               c10::string_view, bool, std::optional<double>, std::optional<double>,
                                               std::optional<double>, const OptionalTensor&)>();
  return op.call(q, k, v, options.activation, options.causal, options.scale, options.bias, options.divisor,
                 options.key_lengths);
}

LinearAttentionResult linear_attention(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                                       const LinearAttentionOptions& options,
                                       const std::optional<LinearAttentionState>& initial_state) {
  static const auto op =
      c10::Dispatcher::singleton()
          .findSchemaOrThrow("actattn::linear_attention", "")
          .typed<std::tuple<at::Tensor, at::Tensor, at::Tensor>(
              const at::Tensor&, const at::Tensor&, const at::Tensor&, c10::string_view, bool, bool, double,
              std::optional<double>, const OptionalTensor&, const OptionalTensor&, const OptionalTensor&)>();
  OptionalTensor kv, normalizer;
  if (initial_state) {
    kv = initial_state->kv;
    normalizer = initial_state->normalizer;
  }
  auto [out, final_kv, final_normalizer] = op.call(q, k, v, options.feature_map, options.causal, options.normalize,
                                                   options.eps, options.scale, kv, normalizer, options.key_lengths);
  return {out, {final_kv, final_normalizer}};
}

}  // namespace actattn
