// The 16-bit element types of the CPU kernels. The kernels read and write tensors of these types in
// place and compute in float32 (their Acc), so a half-precision call costs no widened copies of its
// inputs and outputs. Each type converts to float and, explicitly, from float (round to nearest even,
// NaN kept NaN, overflow to inf: what torch's .to() does); there is no arithmetic on them, so a kernel
// that computed in 16 bits by mistake would not compile.
#pragma once

#include <cstdint>
#include <cstring>

#include "isa.h"

namespace actattn {
namespace cpu {
inline namespace ACTATTN_CPU_ISA {

struct BFloat16 {
  uint16_t bits;

  BFloat16() = default;
  explicit BFloat16(float value) {
    uint32_t u;
    std::memcpy(&u, &value, sizeof u);
    if ((u & 0x7fffffffu) > 0x7f800000u) {
      bits = static_cast<uint16_t>((u >> 16) | 0x0040u);  // NaN: keep sign and top payload, make it quiet
    } else {
      bits = static_cast<uint16_t>((u + 0x7fffu + ((u >> 16) & 1u)) >> 16);  // nearest, ties to even
    }
  }
  operator float() const {
    const uint32_t u = static_cast<uint32_t>(bits) << 16;
    float value;
    std::memcpy(&value, &u, sizeof value);
    return value;
  }
};

// IEEE binary16 through the compiler's _Float16 (F16C instructions with x86-64-v3).
struct Float16 {
  _Float16 value;

  Float16() = default;
  explicit Float16(float v) : value(static_cast<_Float16>(v)) {}
  operator float() const { return static_cast<float>(value); }
};

static_assert(sizeof(BFloat16) == 2 && sizeof(Float16) == 2, "16-bit element types must match torch's layout");

}  // namespace ACTATTN_CPU_ISA
}  // namespace cpu
}  // namespace actattn
