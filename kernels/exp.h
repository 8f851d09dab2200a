// exp for the kernels' inner loops. CUDA uses its own exp. On the CPU, float32 takes a branch-free
// polynomial that the compiler vectorises inside `omp simd` loops (libm's expf is a scalar call there,
// and torch's CPU flash kernel owes much of its lead to a vector exp); float64 keeps std::exp, which
// gradcheck's 1e-9 tolerances need.
//
// float32: exp(x) = 2^n exp(r) with n = round(x / ln 2) and r = x - n ln 2 (ln 2 split in two so that
// r is exact), exp(r) by its Taylor series to r^7 (|r| <= ln2 / 2: truncation error below 0.1 ulp),
// 2^n built in the exponent bits. n is found by adding 1.5 * 2^23, which rounds to an integer in the
// low mantissa bits without a float-to-int conversion (undefined for NaN). Results: relative error
// within 2 ulp of expf; NaN stays NaN; +inf and x > 88.72 give +inf; -inf and x < -87.33 give 0 (no
// denormal results, which softmax weights never need). It vectorises only with -fno-trapping-math
// (the selects are if-converted only when comparisons may be evaluated unconditionally), which the
// build sets: actattn never reads floating-point exception flags, and NaN/inf semantics are unchanged.
#pragma once

#include <cmath>
#include <cstdint>
#include <cstring>

#include "host_device.h"

namespace actattn {

// Always inlined: see host_device.h.
inline __attribute__((always_inline)) float polynomial_exp(float x) {
  constexpr float kLog2e = 1.44269504088896341f;
  constexpr float kLn2Hi = 0.693359375f;       // ln 2 rounded to 10 bits: n * kLn2Hi is exact
  constexpr float kLn2Lo = -2.12194440e-4f;    // ln 2 - kLn2Hi
  constexpr float kRoundShift = 12582912.0f;   // 1.5 * 2^23
  constexpr float kMax = 88.7228394f;          // log(FLT_MAX)
  constexpr float kMin = -87.3365479f;         // log(FLT_MIN): below it the result would be denormal
  const float clamped = x > kMax ? kMax : (x < kMin ? kMin : x);  // NaN passes through unchanged
  const float n = (clamped * kLog2e + kRoundShift) - kRoundShift;
  const float r = (clamped - n * kLn2Hi) - n * kLn2Lo;
  float p = 1.f / 5040.f;
  p = p * r + 1.f / 720.f;
  p = p * r + 1.f / 120.f;
  p = p * r + 1.f / 24.f;
  p = p * r + 1.f / 6.f;
  p = p * r + 0.5f;
  p = p * r + 1.f;
  p = p * r + 1.f;
  // 2^n as 2 * 2^(n - 1) for n > 0, so that n = 128 (x up to log(FLT_MAX)) has an exponent field.
  const bool high = n > 0.f;
  const float exponent = (high ? n - 1.f : n) + kRoundShift;
  uint32_t exponent_bits;
  std::memcpy(&exponent_bits, &exponent, sizeof exponent_bits);
  // The low mantissa bits hold the integer exponent + 2^22 (two's complement wraps for negative ones).
  const uint32_t scale_bits = (exponent_bits - 0x4B400000u + 127u) << 23;
  float scale;
  std::memcpy(&scale, &scale_bits, sizeof scale);
  const float result = p * scale * (high ? 2.f : 1.f);
  return x > kMax ? INFINITY : (x < kMin ? 0.f : result);  // NaN: both false, result is NaN
}

template <typename Acc>
ACTATTN_HOST_DEVICE Acc kernel_exp(Acc x) {
#if defined(__CUDA_ARCH__)
  return exp(x);
#else
  if constexpr (sizeof(Acc) == sizeof(float)) {
    return polynomial_exp(x);
  } else {
    return std::exp(x);
  }
#endif
}

}  // namespace actattn
