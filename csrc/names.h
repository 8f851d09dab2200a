// The one table of option names: score activations of quadratic attention, feature maps of linear
// attention, causal mask alignments. Parsing, error messages and Python (actattn._C.SCORE_ACTIVATIONS,
// FEATURE_MAPS, CAUSAL_ALIGNMENTS) all read these arrays, so a new activation or map is named here once.
#pragma once

#include <c10/util/string_view.h>

#include <array>
#include <string>

#include "../kernels/params.h"

namespace actattn {

template <typename Enum>
struct NamedChoice {
  const char* name;
  Enum value;
};

inline constexpr std::array<NamedChoice<ScoreActivation>, 3> kScoreActivations{{
    {"softmax", ScoreActivation::kSoftmax},
    {"sigmoid", ScoreActivation::kSigmoid},
    {"relu", ScoreActivation::kRelu},
}};

inline constexpr std::array<NamedChoice<FeatureMapKind>, 3> kFeatureMaps{{
    {"identity", FeatureMapKind::kIdentity},
    {"relu", FeatureMapKind::kRelu},
    {"elu", FeatureMapKind::kElu},
}};

// How a causal mask lines up queries with keys when their numbers differ (kernels/key_lengths.h).
enum class CausalAlignment { kTopLeft, kBottomRight };

inline constexpr std::array<NamedChoice<CausalAlignment>, 2> kCausalAlignments{{
    {"top_left", CausalAlignment::kTopLeft},
    {"bottom_right", CausalAlignment::kBottomRight},
}};

// The enum named `name`; raises a ValueError that lists the choices otherwise.
ScoreActivation parse_score_activation(c10::string_view name);
FeatureMapKind parse_feature_map(c10::string_view name);
CausalAlignment parse_causal_alignment(c10::string_view name);

// "'softmax', 'sigmoid', 'relu'": the choices as an error message lists them.
template <typename Enum, size_t N>
std::string quoted_names(const std::array<NamedChoice<Enum>, N>& choices) {
  std::string text;
  for (const auto& choice : choices) text += (text.empty() ? "'" : ", '") + std::string(choice.name) + "'";
  return text;
}

}  // namespace actattn
