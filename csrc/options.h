// Names, defaults and dtypes shared by every backend and by the meta kernels.
#pragma once

#include <ATen/core/Tensor.h>
#include <c10/util/string_view.h>

#include <optional>

#include "../kernels/params.h"

namespace actattn {

// Head dims from 1 to kMaxHeadDim are supported (the CUDA kernels keep a row of q in registers).
constexpr int64_t kMaxHeadDim = 256;

ScoreActivation parse_score_activation(c10::string_view name);
FeatureMapKind parse_feature_map(c10::string_view name);

// float64 accumulates in float64; every other floating type in float32.
at::ScalarType accumulation_dtype(at::ScalarType input);

// The constants of quadratic attention once defaults are applied (needs concrete sizes).
struct ScoreConstants {
  double scale;    // default 1 / sqrt(qk_dim)
  double bias;     // default -log(k_len) for sigmoid, 0 otherwise
  double divisor;  // default k_len for relu, 1 otherwise
  // Set when the default depends on the number of keys: kernels then use each sequence's own key count.
  bool bias_follows_keys;
  bool divisor_follows_keys;
};
ScoreConstants resolve_score_constants(ScoreActivation activation, int64_t k_len, int64_t qk_dim,
                                       std::optional<double> scale, std::optional<double> bias,
                                       std::optional<double> divisor);

// Linear attention's scale on phi(q): default 1 / sqrt(qk_dim), as in SDPA.
double resolve_linear_scale(int64_t qk_dim, std::optional<double> scale);

}  // namespace actattn
