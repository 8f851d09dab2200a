// Score activations of quadratic attention. Each functor gives, for one score s = scale*q.k + bias:
//   prob(s, row_lse)          the weight p that multiplies v (softmax needs the row's log-sum-exp),
//   dscore(s, p, dp, delta)   dL/ds from dp = dL/dp (softmax needs delta = rowsum(dO * O)).
// kNormalizesRows tells the kernels to run the online max/sum (flash) recurrence.
#pragma once

#include <cmath>

#include "exp.h"
#include "host_device.h"

namespace actattn {

template <typename Acc>
struct SoftmaxScore {
  static constexpr bool kNormalizesRows = true;
  Acc inv_divisor;  // unused: softmax normalises itself

  ACTATTN_HOST_DEVICE Acc prob(Acc s, Acc row_lse) const { return kernel_exp(s - row_lse); }
  ACTATTN_HOST_DEVICE Acc dscore(Acc /*s*/, Acc p, Acc dp, Acc delta) const { return p * (dp - delta); }
};

// sigmoid(s) / divisor (Ramapuram et al. 2024; the bias defaults to -log(k_len)).
template <typename Acc>
struct SigmoidScore {
  static constexpr bool kNormalizesRows = false;
  Acc inv_divisor;

  // 1 / (1 + exp(-s)) overflows gracefully: exp(-s) = inf gives 0, never NaN.
  ACTATTN_HOST_DEVICE static Acc sigmoid(Acc s) { return Acc(1) / (Acc(1) + kernel_exp(-s)); }
  ACTATTN_HOST_DEVICE Acc prob(Acc s, Acc /*row_lse*/) const { return sigmoid(s) * inv_divisor; }
  ACTATTN_HOST_DEVICE Acc dscore(Acc s, Acc /*p*/, Acc dp, Acc /*delta*/) const {
    const Acc sig = sigmoid(s);
    return dp * sig * (Acc(1) - sig) * inv_divisor;
  }
};

// relu(s) / divisor (Wortsman et al. 2023: the divisor defaults to k_len).
template <typename Acc>
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
