// Autocast kernels of the public ops: under torch.autocast, q, k and v are cast to the autocast dtype
// (bfloat16 or float16) as F.scaled_dot_product_attention's are (it is on autocast's lower-precision
// list). float64 tensors are left alone, as autocast does everywhere. Linear attention's initial state
// is not cast: it is kept in float32, the accumulation type of half inputs, whatever the input dtype.
#include <ATen/autocast_mode.h>
#include <torch/library.h>

#include "ops.h"

namespace actattn {
namespace {

template <c10::DeviceType kDevice>
at::Tensor cast(const at::Tensor& t) {
  return at::autocast::cached_cast(at::autocast::get_autocast_dtype(kDevice), t, kDevice);
}

template <c10::DeviceType kDevice>
at::Tensor attention_autocast(const at::Tensor& q, const at::Tensor& k,
                              const at::Tensor& v ACTATTN_ATTENTION_OPTIONS(ACTATTN_PARAM)
                                  ACTATTN_ATTENTION_INPUTS(ACTATTN_PARAM)) {
  c10::impl::ExcludeDispatchKeyGuard no_autocast(at::autocast::get_autocast_dispatch_key_from_device_type(kDevice));
  return ops::attention(cast<kDevice>(q), cast<kDevice>(k), cast<kDevice>(v) ACTATTN_ATTENTION_OPTIONS(ACTATTN_ARG)
      ACTATTN_ATTENTION_INPUTS(ACTATTN_ARG));
}

template <c10::DeviceType kDevice>
std::tuple<at::Tensor, at::Tensor> attention_with_lse_autocast(
    const at::Tensor& q, const at::Tensor& k, const at::Tensor& v ACTATTN_ATTENTION_OPTIONS(ACTATTN_PARAM)
        ACTATTN_ATTENTION_INPUTS(ACTATTN_PARAM)) {
  c10::impl::ExcludeDispatchKeyGuard no_autocast(at::autocast::get_autocast_dispatch_key_from_device_type(kDevice));
  return ops::attention_with_lse(cast<kDevice>(q), cast<kDevice>(k),
                                 cast<kDevice>(v) ACTATTN_ATTENTION_OPTIONS(ACTATTN_ARG)
                                     ACTATTN_ATTENTION_INPUTS(ACTATTN_ARG));
}

template <c10::DeviceType kDevice>
std::tuple<at::Tensor, at::Tensor, at::Tensor> linear_attention_autocast(
    const at::Tensor& q, const at::Tensor& k, const at::Tensor& v ACTATTN_LINEAR_OPTIONS(ACTATTN_PARAM),
    const OptionalTensor& initial_state, const OptionalTensor& initial_normalizer, const OptionalTensor& key_lengths) {
  c10::impl::ExcludeDispatchKeyGuard no_autocast(at::autocast::get_autocast_dispatch_key_from_device_type(kDevice));
  return ops::linear_attention(cast<kDevice>(q), cast<kDevice>(k), cast<kDevice>(v) ACTATTN_LINEAR_OPTIONS(ACTATTN_ARG),
                               initial_state, initial_normalizer, key_lengths);
}

}  // namespace

TORCH_LIBRARY_IMPL(actattn, AutocastCPU, m) {
  m.impl("attention", &attention_autocast<c10::DeviceType::CPU>);
  m.impl("attention_with_lse", &attention_with_lse_autocast<c10::DeviceType::CPU>);
  m.impl("linear_attention", &linear_attention_autocast<c10::DeviceType::CPU>);
}

TORCH_LIBRARY_IMPL(actattn, AutocastCUDA, m) {
  m.impl("attention", &attention_autocast<c10::DeviceType::CUDA>);
  m.impl("attention_with_lse", &attention_with_lse_autocast<c10::DeviceType::CUDA>);
  m.impl("linear_attention", &linear_attention_autocast<c10::DeviceType::CUDA>);
}

}  // namespace actattn
