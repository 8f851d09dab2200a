// The one place where runtime choices become compile-time constants. Each helper calls `fn` with a
// tag value whose type carries the choice, so kernels are templates with no runtime branches on
// dtype, activation, feature map or masking in their inner loops.
#pragma once

#include <cstdint>
#include <stdexcept>
#include <type_traits>
#include <utility>

#if defined(__CUDACC__)
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#else
#include "cpu/half_types.h"
#endif

#include "feature_maps.h"
#include "params.h"
#include "score_activations.h"

namespace actattn {

template <typename Scalar, typename Acc>
struct TypePair {
  using scalar_t = Scalar;  // element type in memory
  using acc_t = Acc;        // accumulation type
};

// The CPU kernels' element types: float32 and float64 compute in their own precision, float16 and
// bfloat16 are read and written in place and computed in float32.
template <typename Fn>
void dispatch_dtype(ScalarKind kind, Fn&& fn) {
  switch (kind) {
    case ScalarKind::kFloat32: return fn(TypePair<float, float>{});
    case ScalarKind::kFloat64: return fn(TypePair<double, double>{});
#if !defined(__CUDACC__)
    case ScalarKind::kFloat16: return fn(TypePair<cpu::Float16, float>{});
    case ScalarKind::kBFloat16: return fn(TypePair<cpu::BFloat16, float>{});
#endif
    default: break;
  }
  throw std::invalid_argument("actattn: unknown ScalarKind");
}

#if defined(__CUDACC__)
// The CUDA kernels' element types: half types accumulate in float32.
template <typename Fn>
void dispatch_dtype_cuda(ScalarKind kind, Fn&& fn) {
  switch (kind) {
    case ScalarKind::kFloat32: return fn(TypePair<float, float>{});
    case ScalarKind::kFloat64: return fn(TypePair<double, double>{});
    case ScalarKind::kFloat16: return fn(TypePair<__half, float>{});
    case ScalarKind::kBFloat16: return fn(TypePair<__nv_bfloat16, float>{});
  }
  throw std::invalid_argument("actattn: unknown ScalarKind");
}

// The tensor-core kernels' element types.
template <typename Fn>
void dispatch_half_dtype(ScalarKind kind, Fn&& fn) {
  switch (kind) {
    case ScalarKind::kFloat16: return fn(TypePair<__half, float>{});
    case ScalarKind::kBFloat16: return fn(TypePair<__nv_bfloat16, float>{});
    default: break;
  }
  throw std::invalid_argument("actattn: the tensor-core kernels take float16 or bfloat16");
}

// Head dims with a tiled tensor-core instantiation, 32, 64, 96 and 128 for both op families
// (kernels/cuda/tensor_core_paths.h says which calls take them).
template <typename Fn>
void dispatch_head_dim(int64_t dim, Fn&& fn) {
  auto as = [&](auto kDim) { return dim == kDim ? (fn(kDim), true) : false; };
  const bool found = as(std::integral_constant<int, 32>{}) || as(std::integral_constant<int, 64>{}) ||
                     as(std::integral_constant<int, 96>{}) || as(std::integral_constant<int, 128>{});
  if (!found) throw std::invalid_argument("actattn: no tensor-core kernel for this head dim");
}

template <int kQk, int kV>
struct HeadDims {
  static constexpr int qk = kQk, v = kV;
};

// Head dims (Dk, Dv) of the tensor-core quadratic kernels: Dk = Dv as above and 256 (Gemma's), and
// (192, 128), multi-head latent attention's (DeepSeek-V2 and -V3).
template <typename Fn>
void dispatch_quadratic_head_dims(int64_t qk_dim, int64_t v_dim, Fn&& fn) {
  if (qk_dim == 192 && v_dim == 128) return fn(HeadDims<192, 128>{});
  if (qk_dim != v_dim) throw std::invalid_argument("actattn: no tensor-core kernel for these head dims");
  if (qk_dim == 256) return fn(HeadDims<256, 256>{});
  dispatch_head_dim(qk_dim, [&](auto dim) { fn(HeadDims<dim.value, dim.value>{}); });
}

// Head dims (Dk, Dv) of the tensor-core linear kernels: Dk = Dv as above and 256 (Gemma's; the backward
// runs it as four groups of 64 value columns, linear_backward_tc.cuh), and (64, 128), (128, 64).
template <typename Fn>
void dispatch_linear_head_dims(int64_t qk_dim, int64_t v_dim, Fn&& fn) {
  if (qk_dim == 256 && v_dim == 256) return fn(HeadDims<256, 256>{});
  if (qk_dim == v_dim) return dispatch_head_dim(qk_dim, [&](auto dim) { fn(HeadDims<dim.value, dim.value>{}); });
  if (qk_dim == 64 && v_dim == 128) return fn(HeadDims<64, 128>{});
  if (qk_dim == 128 && v_dim == 64) return fn(HeadDims<128, 64>{});
  throw std::invalid_argument("actattn: no tensor-core kernel for these head dims");
}
#endif

template <typename Fn>
void dispatch_bool(bool value, Fn&& fn) {
  if (value) return fn(std::true_type{});
  return fn(std::false_type{});
}

// Calls fn with a default-constructed activation functor, e.g. SoftmaxScore<Acc, Math>{}.
template <typename Acc, typename Math = ExactMath, typename Fn>
void dispatch_score_activation(ScoreActivation activation, Fn&& fn) {
  switch (activation) {
    case ScoreActivation::kSoftmax: return fn(SoftmaxScore<Acc, Math>{});
    case ScoreActivation::kSigmoid: return fn(SigmoidScore<Acc, Math>{});
    case ScoreActivation::kRelu: return fn(ReluScore<Acc, Math>{});
  }
  throw std::invalid_argument("actattn: unknown ScoreActivation");
}

template <typename Fn>
void dispatch_feature_map(FeatureMapKind map, Fn&& fn) {
  switch (map) {
    case FeatureMapKind::kIdentity: return fn(IdentityMap{});
    case FeatureMapKind::kRelu: return fn(ReluMap{});
    case FeatureMapKind::kElu: return fn(EluPlusOneMap{});
  }
  throw std::invalid_argument("actattn: unknown FeatureMapKind");
}

#if defined(__CUDACC__)
// Every compile-time choice of a tensor-core quadratic kernel: fn(types, activation, banded, head dims);
// the activations with FastMath (score_activations.h).
template <typename Fn>
void dispatch_quadratic_tensor_core(const QuadraticParams& p, Fn&& fn) {
  dispatch_half_dtype(p.dtype, [&](auto types) {
    dispatch_score_activation<float, FastMath>(p.activation, [&](auto activation) {
      dispatch_bool(p.banded(), [&](auto banded) {
        dispatch_quadratic_head_dims(p.shape.qk_dim, p.shape.v_dim,
                                     [&](auto dims) { fn(types, activation, banded, dims); });
      });
    });
  });
}

// Every compile-time choice of a tensor-core linear kernel: fn(types, feature map, causal, head dims).
template <typename Fn>
void dispatch_linear_tensor_core(const LinearParams& p, Fn&& fn) {
  dispatch_half_dtype(p.dtype, [&](auto types) {
    dispatch_feature_map(p.feature_map, [&](auto map) {
      dispatch_bool(p.causal, [&](auto causal) {
        dispatch_linear_head_dims(p.shape.qk_dim, p.shape.v_dim, [&](auto dims) { fn(types, map, causal, dims); });
      });
    });
  });
}
#endif

}  // namespace actattn
