#include "names.h"

#include <c10/util/Exception.h>

namespace actattn {
namespace {

template <typename Enum, size_t N>
Enum parse_choice(const char* option, const std::array<NamedChoice<Enum>, N>& choices, c10::string_view name) {
  for (const auto& choice : choices)
    if (name == choice.name) return choice.value;
  TORCH_CHECK_VALUE(false, "actattn: ", option, " must be one of ", quoted_names(choices), "; got '", name, "'");
}

}  // namespace

ScoreActivation parse_score_activation(c10::string_view name) {
  return parse_choice("activation", kScoreActivations, name);
}

FeatureMapKind parse_feature_map(c10::string_view name) { return parse_choice("feature_map", kFeatureMaps, name); }

CausalAlignment parse_causal_alignment(c10::string_view name) {
  return parse_choice("causal_alignment", kCausalAlignments, name);
}

}  // namespace actattn
