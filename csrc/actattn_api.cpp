#include <actattn/actattn.h>

#include <ATen/ops/empty.h>

#include "ops.h"

// The public options structs name their fields as the ops name their options.
#define ACTATTN_OPTION_FIELD(type, name, schema_type, schema_default) , options.name

namespace actattn {

at::Tensor attention(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, const AttentionOptions& options) {
  OptionalTensor dropout_seed;
  if (options.dropout_p > 0.0) dropout_seed = at::empty({1}, q.options().dtype(at::kLong)).random_();
  return ops::attention(q, k, v ACTATTN_ATTENTION_OPTIONS(ACTATTN_OPTION_FIELD), options.key_lengths, dropout_seed);
}

LinearAttentionResult linear_attention(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                                       const LinearAttentionOptions& options,
                                       const std::optional<LinearAttentionState>& initial_state) {
  OptionalTensor kv, normalizer;
  if (initial_state) {
    kv = initial_state->kv;
    normalizer = initial_state->normalizer;
  }
  auto [out, final_kv, final_normalizer] = ops::linear_attention(
      q, k, v ACTATTN_LINEAR_OPTIONS(ACTATTN_OPTION_FIELD), kv, normalizer, options.key_lengths);
  return {out, {final_kv, final_normalizer}};
}

}  // namespace actattn
