// kernels/exp.h's float32 polynomial exp against libm's double exp: relative error over the whole
// finite range, and NaN / inf / underflow behaviour. Exits non-zero on any failure.
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <initializer_list>
#include <limits>

#include "../../kernels/exp.h"

int main() {
  int failures = 0;
  double worst = 0;
  float worst_at = 0;
  // Every 4099th float bit pattern up to log(FLT_MAX), each sign (covers every exponent): 546k points.
  for (uint32_t bits = 0; bits < 0x42B17218u; bits += 4099) {
    for (const float sign : {1.f, -1.f}) {
      float x;
      std::memcpy(&x, &bits, sizeof x);
      x *= sign;
      if (x < -87.33f) continue;  // below log(FLT_MIN) the result is 0 by design (checked below)
      const double exact = std::exp(static_cast<double>(x));
      const double error = std::fabs(actattn::polynomial_exp(x) - exact) / exact;
      if (error > worst) worst = error, worst_at = x;
    }
  }
  const double ulp = std::numeric_limits<float>::epsilon();  // 2^-23
  std::printf("polynomial_exp: worst relative error %.3g (%.2f ulp of 1) at x = %.6g\n", worst, worst / ulp, worst_at);
  if (worst > 2 * ulp) ++failures, std::printf("FAIL: relative error above 2 ulp\n");

  auto expect = [&](const char* what, bool ok) {
    if (!ok) ++failures, std::printf("FAIL: %s\n", what);
  };
  const float inf = std::numeric_limits<float>::infinity();
  expect("exp(NaN) is NaN", std::isnan(actattn::polynomial_exp(std::nanf(""))));
  expect("exp(+inf) is +inf", actattn::polynomial_exp(inf) == inf);
  expect("exp(-inf) is 0", actattn::polynomial_exp(-inf) == 0.f);
  expect("exp(100) overflows to +inf", actattn::polynomial_exp(100.f) == inf);
  expect("exp(-100) is 0", actattn::polynomial_exp(-100.f) == 0.f);
  expect("exp(0) is 1", actattn::polynomial_exp(0.f) == 1.f);
  expect("exp(88.7) is finite (n = 128)", std::isfinite(actattn::polynomial_exp(88.7f)));
  if (failures == 0) std::printf("polynomial_exp: every check holds\n");
  return failures == 0 ? 0 : 1;
}
