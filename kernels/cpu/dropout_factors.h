// Dropout factors of a run of keys of one query row on the CPU: the draws of kernels/dropout.h, laid
// out so that the compiler vectorises across draws (the 32 x 32 -> 64-bit products of Philox map onto
// packed unsigned multiplies), instead of one draw after another: one draw per four weights is
// otherwise the largest cost dropout adds to the kernels.
#pragma once

#include <cstdint>

#include "../dropout.h"
#include "isa.h"
#include "quadratic_tile.h"

namespace actattn {
namespace cpu {
inline namespace ACTATTN_CPU_ISA {

// Factors (kept_scale or 0) of keys [first, first + count) of query row `query_row` into out;
// `first` a multiple of 4, count <= kKeyTile. The same bits as Dropout::multiplier key by key.
template <typename Acc>
void dropout_factors(const Dropout<Acc>& dropout, int64_t query_row, int64_t first, int64_t count, Acc* out) {
  constexpr int64_t kMaxDraws = kKeyTile / 4;
  // Zeroed only so that GCC 13 does not warn (maybe-uninitialized): words [0, count) are always drawn.
  uint32_t words[kMaxDraws * 4] = {};
  const uint64_t row = static_cast<uint64_t>(query_row);
  const uint32_t row_low = static_cast<uint32_t>(row), row_high = static_cast<uint32_t>(row >> 32);
  const uint32_t first_draw = static_cast<uint32_t>(first >> 2);
  const int64_t draws = (count + 3) / 4;
#pragma omp simd
  for (int64_t g = 0; g < draws; ++g) {
    uint32_t c0 = first_draw + static_cast<uint32_t>(g), c1 = row_low, c2 = row_high, c3 = 0u;
    philox4x32_10_rounds(c0, c1, c2, c3, dropout.seed);
    words[4 * g] = c0;
    words[4 * g + 1] = c1;
    words[4 * g + 2] = c2;
    words[4 * g + 3] = c3;
  }
  // Compared as int64 (keep_below <= 2^32, words < 2^32): AVX2 has a signed 64-bit compare only.
  const int64_t keep_below = static_cast<int64_t>(dropout.keep_below);
  const Acc kept_scale = dropout.kept_scale;
#pragma omp simd
  for (int64_t t = 0; t < count; ++t) out[t] = int64_t(words[t]) < keep_below ? kept_scale : Acc(0);
}

}  // namespace ACTATTN_CPU_ISA
}  // namespace cpu
}  // namespace actattn
