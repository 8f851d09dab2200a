// Feature maps phi of linear attention, applied inside the kernels to q and k. Each functor gives phi(x)
// and phi'(x) from the raw input x, so the backward needs neither phi(q) nor phi(k) saved.
// Adding a map: one functor here, one enum value in params.h, one case in dispatch.h, one name in csrc.
#pragma once

#include <cmath>

#include "host_device.h"

namespace actattn {

struct IdentityMap {
  template <typename Acc>
  ACTATTN_HOST_DEVICE static Acc value(Acc x) { return x; }
  template <typename Acc>
  ACTATTN_HOST_DEVICE static Acc derivative(Acc /*x*/) { return Acc(1); }
};

struct ReluMap {
  template <typename Acc>
  ACTATTN_HOST_DEVICE static Acc value(Acc x) { return x > Acc(0) ? x : Acc(0); }
  template <typename Acc>
  ACTATTN_HOST_DEVICE static Acc derivative(Acc x) { return x > Acc(0) ? Acc(1) : Acc(0); }
};

// elu(x) + 1 (Katharopoulos et al. 2020): positive everywhere, so the normaliser never crosses zero.
struct EluPlusOneMap {
  template <typename Acc>
  ACTATTN_HOST_DEVICE static Acc value(Acc x) { return x > Acc(0) ? x + Acc(1) : std::exp(x); }
  template <typename Acc>
  ACTATTN_HOST_DEVICE static Acc derivative(Acc x) { return x > Acc(0) ? Acc(1) : std::exp(x); }
};

}  // namespace actattn
