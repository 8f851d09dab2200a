// Feature maps phi of linear attention, applied inside the kernels to q and k. Each functor gives phi(x)
// and, from the raw input x and g = dL/dphi(x), the gradient dL/dx, so the backward needs neither phi(q)
// nor phi(k) saved. The gradient is a function of (x, g), not phi'(x) * g, because torch masks where a
// map is flat (relu's 0 * NaN is 0 in torch, NaN as a product): gradients match torch's, NaN included.
// Adding a map: one functor here, one enum value in params.h, one case in dispatch.h, one name in
// csrc/names.h (which Python reads too), and its reference in python/actattn/reference.py.
#pragma once

#include <cmath>

#include "exp.h"
#include "host_device.h"

namespace actattn {

struct IdentityMap {
  template <typename Acc>
  ACTATTN_HOST_DEVICE static Acc value(Acc x) { return x; }
  template <typename Acc>
  ACTATTN_HOST_DEVICE static Acc grad(Acc /*x*/, Acc g) { return g; }
};

// "x <= 0 ? 0 : x" keeps a NaN input NaN and passes its gradient, as torch.relu (threshold_backward) does.
struct ReluMap {
  template <typename Acc>
  ACTATTN_HOST_DEVICE static Acc value(Acc x) { return x <= Acc(0) ? Acc(0) : x; }
  template <typename Acc>
  ACTATTN_HOST_DEVICE static Acc grad(Acc x, Acc g) { return x <= Acc(0) ? Acc(0) : g; }
};

// elu(x) + 1 (Katharopoulos et al. 2020): positive everywhere, so the normaliser never crosses zero.
struct EluPlusOneMap {
  template <typename Acc>
  ACTATTN_HOST_DEVICE static Acc value(Acc x) { return x > Acc(0) ? x + Acc(1) : kernel_exp(x); }
  template <typename Acc>
  ACTATTN_HOST_DEVICE static Acc grad(Acc x, Acc g) { return x > Acc(0) ? g : g * kernel_exp(x); }
};

}  // namespace actattn
