#include "checks.h"

#include <c10/util/Exception.h>

#include <cmath>
#include <utility>
#include <vector>

#include "op_options.h"

namespace actattn {
namespace {

// The four dtypes the kernels compute in; float8 and other floating types are not among them.
bool is_supported_dtype(at::ScalarType dtype) {
  return dtype == at::kDouble || dtype == at::kFloat || dtype == at::kBFloat16 || dtype == at::kHalf;
}

void check_rank4_floating(const char* op, const char* name, const at::Tensor& t) {
  TORCH_CHECK(t.defined(), op, ": ", name, " must be a tensor, got an undefined tensor");
  TORCH_CHECK_VALUE(t.dim() == 4, op, ": ", name, " must have 4 dimensions (batch, heads, seq_len, head_dim), got ",
                    t.dim(), " dimensions with shape ", t.sym_sizes());
  TORCH_CHECK_TYPE(is_supported_dtype(t.scalar_type()), op, ": ", name,
                   " must be a floating-point tensor (float64, float32, bfloat16 or float16), got ", t.scalar_type());
}

void check_shape(const char* op, const char* name, const at::Tensor& t, c10::SymIntArrayRef expected,
                 const char* expected_text) {
  TORCH_CHECK_VALUE(t.sym_sizes() == expected, op, ": ", name, " must have shape ", expected_text, " = ", expected,
                    ", got ", t.sym_sizes());
}

void check_size(const char* op, const char* what, const char* a_name, const at::Tensor& a, int64_t a_dim,
                const char* b_name, const at::Tensor& b, int64_t b_dim) {
  TORCH_CHECK_VALUE(a.sym_size(a_dim) == b.sym_size(b_dim), op, ": ", b_name, " must have the same ", what, " as ",
                    a_name, " (", a.sym_size(a_dim), "); got ", b.sym_size(b_dim), " (", a_name, " shape ",
                    a.sym_sizes(), ", ", b_name, " shape ", b.sym_sizes(), ")");
}

void check_head_dim(const char* op, const char* name, const at::Tensor& t) {
  const c10::SymInt& dim = t.sym_size(3);
  TORCH_CHECK_VALUE(dim >= 1 && dim <= kMaxHeadDim, op, ": the head dim of ", name, " must be between 1 and ",
                    kMaxHeadDim, ", got ", dim);
}

// A linear-attention state is one per key/value head: (batch, kv_heads, qk_dim[, v_dim]).
void check_state(const char* op, const char* name, const at::Tensor& state, const at::Tensor& q, const at::Tensor& k,
                 const at::Tensor& v, bool with_value_dim) {
  TORCH_CHECK_TYPE(state.scalar_type() == accumulation_dtype(q.scalar_type()), op, ": ", name, " must have dtype ",
                   accumulation_dtype(q.scalar_type()), " (the accumulation type of ", q.scalar_type(),
                   " inputs), got ", state.scalar_type());
  TORCH_CHECK(state.device() == q.device(), op, ": ", name, " must be on ", q.device(), " like q, got ",
              state.device());
  std::vector<c10::SymInt> expected{q.sym_size(0), k.sym_size(1), q.sym_size(3)};
  if (with_value_dim) expected.push_back(v.sym_size(3));
  check_shape(op, name, state, expected,
              with_value_dim ? "(batch, kv_heads, qk_dim, v_dim)" : "(batch, kv_heads, qk_dim)");
}

}  // namespace

AttentionSpec check_attention_call(const char* op, const at::Tensor& q, const at::Tensor& k,
                                   const at::Tensor& v ACTATTN_ATTENTION_OPTIONS(ACTATTN_PARAM)
                                       ACTATTN_ATTENTION_INPUTS(ACTATTN_PARAM)) {
  check_qkv(op, q, k, v);
  const AttentionSpec spec = parse_attention_options(op ACTATTN_ATTENTION_OPTIONS(ACTATTN_ARG));
  check_key_lengths(key_lengths, q);
  check_dropout_seed(op, spec, dropout_seed, q);
  return spec;
}

LinearSpec check_linear_call(const char* op, const at::Tensor& q, const at::Tensor& k,
                             const at::Tensor& v ACTATTN_LINEAR_OPTIONS(ACTATTN_PARAM),
                             const std::optional<at::Tensor>& initial_state,
                             const std::optional<at::Tensor>& initial_normalizer,
                             const std::optional<at::Tensor>& key_lengths) {
  check_qkv(op, q, k, v);
  const LinearSpec spec = parse_linear_options(op ACTATTN_LINEAR_OPTIONS(ACTATTN_ARG));
  check_linear_state(op, spec, q, k, v, initial_state, initial_normalizer);
  check_key_lengths(key_lengths, q);
  return spec;
}

void check_qkv(const char* op, const at::Tensor& q, const at::Tensor& k, const at::Tensor& v) {
  check_rank4_floating(op, "q", q);
  check_rank4_floating(op, "k", k);
  check_rank4_floating(op, "v", v);
  TORCH_CHECK_TYPE(k.scalar_type() == q.scalar_type() && v.scalar_type() == q.scalar_type(), op,
                   ": q, k and v must have the same dtype, got q ", q.scalar_type(), ", k ", k.scalar_type(), ", v ",
                   v.scalar_type());
  TORCH_CHECK(k.device() == q.device() && v.device() == q.device(), op,
              ": q, k and v must be on the same device, got q on ", q.device(), ", k on ", k.device(), ", v on ",
              v.device());
  check_size(op, "batch size (dim 0)", "q", q, 0, "k", k, 0);
  check_size(op, "batch size (dim 0)", "q", q, 0, "v", v, 0);
  check_size(op, "number of heads (dim 1)", "k", k, 1, "v", v, 1);
  // Grouped-query attention: each key/value head serves q_heads / kv_heads consecutive query heads.
  const c10::SymInt& kv_heads = k.sym_size(1);
  TORCH_CHECK_VALUE(kv_heads == q.sym_size(1) || (kv_heads >= 1 && q.sym_size(1) % kv_heads == 0), op,
                    ": the number of query heads (", q.sym_size(1),
                    ") must be a multiple of the number of key/value heads (", kv_heads,
                    ") (grouped-query attention); got q shape ", q.sym_sizes(), ", k shape ", k.sym_sizes());
  check_size(op, "sequence length (dim 2)", "k", k, 2, "v", v, 2);
  check_size(op, "head dim (dim 3)", "q", q, 3, "k", k, 3);
  check_head_dim(op, "q and k", q);
  check_head_dim(op, "v", v);
}

void check_linear_state(const char* op, const LinearSpec& spec, const at::Tensor& q, const at::Tensor& k,
                        const at::Tensor& v, const std::optional<at::Tensor>& initial_state,
                        const std::optional<at::Tensor>& initial_normalizer) {
  if (spec.causal) {
    TORCH_CHECK_VALUE(q.sym_size(2) == k.sym_size(2), op,
                      ": causal linear attention needs as many queries as keys; got q_len ", q.sym_size(2),
                      " and k_len ", k.sym_size(2));
  }
  const bool has_state = initial_state.has_value() || initial_normalizer.has_value();
  TORCH_CHECK_VALUE(!has_state || spec.causal, op,
                    ": initial_state is only defined for causal=True (a non-causal call sees all its keys at once)");
  // A state is the pair (kv, normalizer): a missing half would silently be taken as zeros.
  TORCH_CHECK_VALUE(initial_state.has_value() == initial_normalizer.has_value(), op,
                    ": initial_state and initial_normalizer must be given together (a state is the pair (kv, "
                    "normalizer) returned with return_state=True); got only ",
                    initial_state ? "initial_state" : "initial_normalizer");
  if (initial_state) check_state(op, "initial_state", *initial_state, q, k, v, /*with_value_dim=*/true);
  if (initial_normalizer) check_state(op, "initial_normalizer", *initial_normalizer, q, k, v, /*with_value_dim=*/false);
}

void check_key_lengths(const std::optional<at::Tensor>& key_lengths, const at::Tensor& q) {
  if (!key_lengths) return;
  const at::Tensor& t = *key_lengths;
  const char* op = "actattn";
  TORCH_CHECK_TYPE(t.scalar_type() == at::kLong || t.scalar_type() == at::kInt, op,
                   ": key_lengths must be an int64 or int32 tensor, got ", t.scalar_type());
  TORCH_CHECK_VALUE(t.dim() == 1 && t.sym_size(0) == q.sym_size(0), op,
                    ": key_lengths must have shape (batch,) = [", q.sym_size(0), "], got ", t.sym_sizes());
  TORCH_CHECK(t.device() == q.device(), op, ": key_lengths must be on ", q.device(), " like q, got ", t.device());
}

void check_dropout_seed(const char* op, const AttentionSpec& spec, const std::optional<at::Tensor>& dropout_seed,
                        const at::Tensor& q) {
  if (spec.dropout_p == 0.0) return;  // no generator to key: a seed is ignored
  TORCH_CHECK_VALUE(dropout_seed.has_value(), op, ": dropout_p=", spec.dropout_p,
                    " needs dropout_seed, one int64 on q's device (actattn.attention and "
                    "actattn.scaled_dot_product_attention draw it from torch's generator; the torch.ops.actattn "
                    "ops take it explicitly so that they stay deterministic)");
  const at::Tensor& t = *dropout_seed;
  TORCH_CHECK_TYPE(t.scalar_type() == at::kLong, op, ": dropout_seed must be an int64 tensor, got ", t.scalar_type());
  TORCH_CHECK_VALUE(t.dim() == 1 && t.sym_size(0) == 1, op, ": dropout_seed must have shape (1,), got ",
                    t.sym_sizes());
  TORCH_CHECK(t.device() == q.device(), op, ": dropout_seed must be on ", q.device(), " like q, got ", t.device());
}

void check_final_state_grads(const char* op, const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                             const std::optional<at::Tensor>& grad_final_state,
                             const std::optional<at::Tensor>& grad_final_normalizer) {
  if (grad_final_state) check_state(op, "grad_final_state", *grad_final_state, q, k, v, /*with_value_dim=*/true);
  if (grad_final_normalizer) {
    check_state(op, "grad_final_normalizer", *grad_final_normalizer, q, k, v, /*with_value_dim=*/false);
  }
}

void check_saved_state(const char* op, const LinearSpec& spec, const at::Tensor& q, const at::Tensor& k,
                       const at::Tensor& v, const std::optional<at::Tensor>& saved_state,
                       const std::optional<at::Tensor>& saved_normalizer) {
  if (!saved_state && !saved_normalizer) return;
  TORCH_CHECK_VALUE(!spec.causal, op,
                    ": saved_state is the non-causal forward's state over all keys; a causal backward rebuilds "
                    "its state chunk by chunk and takes none");
  TORCH_CHECK_VALUE(saved_state.has_value() == saved_normalizer.has_value(), op,
                    ": saved_state and saved_normalizer must be given together (the forward's final_state and "
                    "final_normalizer)");
  check_state(op, "saved_state", *saved_state, q, k, v, /*with_value_dim=*/true);
  check_state(op, "saved_normalizer", *saved_normalizer, q, k, v, /*with_value_dim=*/false);
}

void check_backward_tensors(const char* op, const at::Tensor& q, const at::Tensor& v, const at::Tensor& out,
                            const at::Tensor& grad_out, const char* row_stat_name, const at::Tensor& row_stat,
                            bool row_stat_read) {
  for (const auto& [name, t] : {std::pair<const char*, const at::Tensor&>{"out", out}, {"grad_out", grad_out}}) {
    TORCH_CHECK(t.defined(), op, ": ", name, " must be a tensor, got an undefined tensor");
    TORCH_CHECK_TYPE(t.scalar_type() == q.scalar_type(), op, ": ", name, " must have q's dtype ", q.scalar_type(),
                     ", got ", t.scalar_type());
    TORCH_CHECK(t.device() == q.device(), op, ": ", name, " must be on ", q.device(), " like q, got ", t.device());
    const std::vector<c10::SymInt> expected{q.sym_size(0), q.sym_size(1), q.sym_size(2), v.sym_size(3)};
    check_shape(op, name, t, expected, "(batch, heads, q_len, v_dim)");
  }
  if (!row_stat_read) return;
  TORCH_CHECK(row_stat.defined(), op, ": ", row_stat_name, " must be a tensor, got an undefined tensor");
  const at::ScalarType acc = accumulation_dtype(q.scalar_type());
  TORCH_CHECK_TYPE(row_stat.scalar_type() == acc, op, ": ", row_stat_name, " must have dtype ", acc,
                   " (the accumulation type of ", q.scalar_type(), " inputs, as the forward returns it), got ",
                   row_stat.scalar_type());
  TORCH_CHECK(row_stat.device() == q.device(), op, ": ", row_stat_name, " must be on ", q.device(),
              " like q, got ", row_stat.device());
  const std::vector<c10::SymInt> expected{q.sym_size(0), q.sym_size(1), q.sym_size(2)};
  check_shape(op, row_stat_name, row_stat, expected, "(batch, heads, q_len)");
}

}  // namespace actattn
