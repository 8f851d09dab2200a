// The schemas of every actattn operator. Public ops (attention, linear_attention) carry autograd;
// the underscored forward/backward ops are what backends implement and what autograd calls.
#include <torch/library.h>

TORCH_LIBRARY(actattn, m) {
  m.def(
      "attention(Tensor q, Tensor k, Tensor v, str activation=\"softmax\", bool causal=False, "
      "float? scale=None, float? bias=None, float? divisor=None, Tensor? key_lengths=None) -> Tensor");
  m.def(
      "_attention_forward(Tensor q, Tensor k, Tensor v, str activation, bool causal, float? scale, "
      "float? bias, float? divisor, Tensor? key_lengths) -> (Tensor out, Tensor log_sum_exp)");
  m.def(
      "_attention_backward(Tensor grad_out, Tensor q, Tensor k, Tensor v, Tensor out, Tensor log_sum_exp, "
      "str activation, bool causal, float? scale, float? bias, float? divisor, Tensor? key_lengths) "
      "-> (Tensor grad_q, Tensor grad_k, Tensor grad_v)");
  m.def(
      "linear_attention(Tensor q, Tensor k, Tensor v, str feature_map=\"elu\", bool causal=False, "
      "bool normalize=True, float eps=1e-06, float? scale=None, Tensor? initial_state=None, "
      "Tensor? initial_normalizer=None, Tensor? key_lengths=None) "
      "-> (Tensor out, Tensor final_state, Tensor final_normalizer)");
  m.def(
      "_linear_attention_forward(Tensor q, Tensor k, Tensor v, str feature_map, bool causal, bool normalize, "
      "float eps, float? scale, Tensor? initial_state, Tensor? initial_normalizer, Tensor? key_lengths) "
      "-> (Tensor out, Tensor final_state, Tensor final_normalizer, Tensor denominator)");
  m.def(
      "_linear_attention_backward(Tensor grad_out, Tensor? grad_final_state, Tensor? grad_final_normalizer, "
      "Tensor q, Tensor k, Tensor v, Tensor out, Tensor denominator, str feature_map, bool causal, "
      "bool normalize, float eps, float? scale, Tensor? initial_state, Tensor? initial_normalizer, "
      "Tensor? key_lengths) "
      "-> (Tensor grad_q, Tensor grad_k, Tensor grad_v, Tensor grad_initial_state, "
      "Tensor grad_initial_normalizer)");
}
