// Score activations of quadratic attention. Each functor gives, for one score s = scale*q.k + bias:
//   prob(s, row_lse)          the weight p that multiplies v (softmax needs the row's log-sum-exp),
//   dscore(s, p, dp, delta)   dL/ds from dp = dL/dp (softmax needs delta = rowsum(dO * O)).
// kNormalizesRows tells the kernels to run the online max/sum (flash) recurrence.
// Math: how exp is computed. ExactMath everywhere but in the CUDA tensor-core kernels, which take
// FastMath (their inputs and outputs are 16-bit, so the hardware's approximation, within a few float32
// ulp, costs nothing that the outputs keep: FlashAttention computes its softmax the same way).
#pragma once

#include <cmath>

#include "exp.h"
#include "host_device.h"

namespace actattn {

struct ExactMath {
  template <typename Acc>
  ACTATTN_HOST_DEVICE static Acc exp(Acc x) {
    return kernel_exp(x);
  }
};

// float32 only. On the GPU __expf (ex2.approx after one multiply; relative error about 2 + 1.16 |x|
// ulp) instead of expf's range reduction; on the host (the warp emulation) the exact function.
// Sigmoid's division stays IEEE: with __fdividef as well, ptxas spilled the D = 64 sigmoid dK/dV kernel
// (255 registers, where the division's out-of-line slow path kept it at 228).
struct FastMath {
  ACTATTN_HOST_DEVICE static float exp(float x) {
#if defined(__CUDA_ARCH__)
    return __expf(x);
#else
    return kernel_exp(x);
#endif
  }
};

template <typename Acc, typename Math = ExactMath>
struct SoftmaxScore {
  static constexpr bool kNormalizesRows = true;
  Acc inv_divisor;  // unused: softmax normalises itself

  ACTATTN_HOST_DEVICE Acc prob(Acc s, Acc row_lse) const { return Math::exp(s - row_lse); }
  ACTATTN_HOST_DEVICE Acc dscore(Acc /*s*/, Acc p, Acc dp, Acc delta) const { return p * (dp - delta); }
};

// sigmoid(s) / divisor (Ramapuram et al. 2024; the bias defaults to -log(k_len)).
template <typename Acc, typename Math = ExactMath>
struct SigmoidScore {
  static constexpr bool kNormalizesRows = false;
  Acc inv_divisor;

  // 1 / (1 + exp(-s)) overflows gracefully: exp(-s) = inf gives 0, never NaN.
  ACTATTN_HOST_DEVICE static Acc sigmoid(Acc s) { return Acc(1) / (Acc(1) + Math::exp(-s)); }
  ACTATTN_HOST_DEVICE Acc prob(Acc s, Acc /*row_lse*/) const { return sigmoid(s) * inv_divisor; }
  ACTATTN_HOST_DEVICE Acc dscore(Acc s, Acc /*p*/, Acc dp, Acc /*delta*/) const {
    const Acc sig = sigmoid(s);
    return dp * sig * (Acc(1) - sig) * inv_divisor;
  }
};

// relu(s) / divisor (Wortsman et al. 2023: the divisor defaults to k_len). No exp: Math is unused, taken
// only so that the three share a signature.
template <typename Acc, typename Math = ExactMath>
struct ReluScore {
  static constexpr bool kNormalizesRows = false;
  Acc inv_divisor;

  // Written as "s <= 0 ? 0 : ..." so that a NaN score stays NaN (forward) and passes its gradient
  // (backward), exactly as torch.relu and its threshold_backward do; "s > 0 ? s : 0" would hide it.
  ACTATTN_HOST_DEVICE Acc prob(Acc s, Acc /*row_lse*/) const { return s <= Acc(0) ? Acc(0) : s * inv_divisor; }
  ACTATTN_HOST_DEVICE Acc dscore(Acc s, Acc /*p*/, Acc dp, Acc /*delta*/) const {
    return s <= Acc(0) ? Acc(0) : dp * inv_divisor;
  }
};

}  // namespace actattn
