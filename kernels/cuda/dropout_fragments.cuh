// Dropout factors of an mma.sync accumulator fragment (mma.cuh's FragC), one Philox draw per four elements.
//
// A draw (dropout.h) decides keys 4m .. 4m + 3 of one query row. In a fragment those four keys sit in
// several lanes: the lanes t and t ^ 1 where columns are keys (the forward's scores, the dQ kernel's),
// the lanes g, g ^ 1, g ^ 2, g ^ 3 where rows are keys (the dK / dV kernel's transposed scores). Each
// lane used to draw every word it needed itself, so those lanes repeated one another's draws: 2 draws
// per 4 elements in the first layout, 4 in the second. Here each lane draws once, turns its draw into
// four keep bits and the lanes pass one another those bits by shuffles (one in the first layout, three
// in the second): the ten Philox rounds (about 100 instructions) are what dropout costs in these
// kernels, so this does a half (first layout) or a quarter (second) of that work.
// The factors are the same bits as dropout.h's `multiplier` gives for each element.
// All 32 lanes of the warp must call these together (they shuffle).
#pragma once

#include <cstdint>

#include "../dropout.h"

namespace actattn {
namespace cuda {
namespace dropout_fragments {

// Bit j: whether word j of a draw keeps its weight (four bits, where the words would take four registers).
__device__ __forceinline__ uint32_t keep_bits(const Dropout<float>& dropout, const PhiloxWords& drawn) {
  uint32_t bits = 0;
#pragma unroll
  for (int j = 0; j < 4; ++j) bits |= static_cast<uint32_t>(drawn.x[j] < dropout.keep_below) << j;
  return bits;
}

__device__ __forceinline__ float factor(const Dropout<float>& dropout, uint32_t bits, int bit) {
  return (bits >> bit) & 1u ? dropout.kept_scale : 0.f;
}

// Rows are queries, columns keys: keep[2 half + c] is the factor of (query_rows[half], key + c), where
// key = k0 + 8 n + 2 t is this lane's first column of the fragment (k0 a multiple of 4). Lanes t and
// t ^ 1 hold the same draw's keys for both rows: the even lane draws row 0, the odd lane row 1, and
// they swap their keep bits (this lane's keys are words 2 (t & 1) and 2 (t & 1) + 1 of either draw).
__device__ __forceinline__ void row_major_factors(const Dropout<float>& dropout, const int64_t (&query_rows)[2],
                                                  int64_t key, int t, float (&keep)[4]) {
  const int odd = t & 1;
  const uint32_t mine = keep_bits(dropout, dropout.draw(odd ? query_rows[1] : query_rows[0], key));
  const uint32_t theirs = __shfl_xor_sync(0xffffffffu, mine, 1);
  const uint32_t row0 = odd ? theirs : mine, row1 = odd ? mine : theirs;
  keep[0] = factor(dropout, row0, 2 * odd);
  keep[1] = factor(dropout, row0, 2 * odd + 1);
  keep[2] = factor(dropout, row1, 2 * odd);
  keep[3] = factor(dropout, row1, 2 * odd + 1);
}

// Rows are keys, columns queries: keep[2 half + c] is the factor of (query_row0 + c, key_rows[half]),
// with key_rows = {k + g, k + g + 8} (k a multiple of 16) and query_row0 this lane's first column
// (even). The four lanes g = 4m .. 4m + 3 of one t hold the four keys of each of the four draws their
// elements need, (query_row0 + c, key_rows[half]) for the four (half, c): lane d = g & 3 makes draw
// number d (half = d >> 1, c = d & 1), and from lane d ^ r (lane ^ 4 r, r = 1, 2, 3) it takes bit d of
// draw d ^ r's keep bits, the decision for its own key.
__device__ __forceinline__ void key_major_factors(const Dropout<float>& dropout, int64_t query_row0,
                                                  const int64_t (&key_rows)[2], int g, float (&keep)[4]) {
  const int d = g & 3;
  const uint32_t drawn = keep_bits(dropout, dropout.draw(query_row0 + (d & 1), d & 2 ? key_rows[1] : key_rows[0]));
  uint32_t mine = ((drawn >> d) & 1u) << d;  // bit e: draw e's decision for this lane's key
#pragma unroll
  for (int r = 1; r < 4; ++r) mine |= ((__shfl_xor_sync(0xffffffffu, drawn, 4 * r) >> d) & 1u) << (d ^ r);
#pragma unroll
  for (int e = 0; e < 4; ++e) keep[e] = factor(dropout, mine, e);
}

}  // namespace dropout_fragments
}  // namespace cuda
}  // namespace actattn
