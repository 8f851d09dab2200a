// The schemas of every actattn operator. Public ops (attention, attention_with_lse, linear_attention)
// carry autograd;
// the underscored forward/backward ops are what backends implement and what autograd calls. Scalar
// options come from op_options.h (defaults only on the public ops: the underscored ones are internal
// and always called with every argument).
#include <torch/library.h>

#include "op_options.h"

TORCH_LIBRARY(actattn, m) {
  m.def("attention(Tensor q, Tensor k, Tensor v" ACTATTN_ATTENTION_OPTIONS(ACTATTN_SCHEMA_WITH_DEFAULT)
            ACTATTN_ATTENTION_INPUTS(ACTATTN_SCHEMA_WITH_DEFAULT) ") -> Tensor");
  m.def("attention_with_lse(Tensor q, Tensor k, Tensor v" ACTATTN_ATTENTION_OPTIONS(ACTATTN_SCHEMA_WITH_DEFAULT)
            ACTATTN_ATTENTION_INPUTS(ACTATTN_SCHEMA_WITH_DEFAULT) ") -> (Tensor out, Tensor log_sum_exp)");
  m.def("_attention_forward(Tensor q, Tensor k, Tensor v" ACTATTN_ATTENTION_OPTIONS(ACTATTN_SCHEMA)
            ACTATTN_ATTENTION_INPUTS(ACTATTN_SCHEMA) ") -> (Tensor out, Tensor log_sum_exp)");
  m.def("_attention_backward(Tensor grad_out, Tensor q, Tensor k, Tensor v, Tensor out, Tensor log_sum_exp"
        ACTATTN_ATTENTION_OPTIONS(ACTATTN_SCHEMA) ACTATTN_ATTENTION_INPUTS(ACTATTN_SCHEMA) ", bool[3] output_mask) "
        "-> (Tensor grad_q, Tensor grad_k, Tensor grad_v)");
  m.def("linear_attention(Tensor q, Tensor k, Tensor v" ACTATTN_LINEAR_OPTIONS(ACTATTN_SCHEMA_WITH_DEFAULT)
        ", Tensor? initial_state=None, Tensor? initial_normalizer=None, Tensor? key_lengths=None) "
        "-> (Tensor out, Tensor final_state, Tensor final_normalizer)");
  m.def("_linear_attention_forward(Tensor q, Tensor k, Tensor v" ACTATTN_LINEAR_OPTIONS(ACTATTN_SCHEMA)
        ", Tensor? initial_state, Tensor? initial_normalizer, Tensor? key_lengths) "
        "-> (Tensor out, Tensor final_state, Tensor final_normalizer, Tensor denominator)");
  m.def("_linear_attention_backward(Tensor grad_out, Tensor? grad_final_state, Tensor? grad_final_normalizer, "
        "Tensor q, Tensor k, Tensor v, Tensor out, Tensor denominator" ACTATTN_LINEAR_OPTIONS(ACTATTN_SCHEMA)
        ", Tensor? initial_state, Tensor? initial_normalizer, Tensor? key_lengths, bool[3] output_mask, "
        "Tensor? saved_state=None, Tensor? saved_normalizer=None) -> (Tensor grad_q, Tensor grad_k, Tensor grad_v, Tensor grad_initial_state, "
        "Tensor grad_initial_normalizer)");
}
