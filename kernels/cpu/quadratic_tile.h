// Tiles shared by the quadratic-attention CPU kernels. A key tile of up to kKeyTile keys is loaded
// once, transposed, into the accumulation type; every query row of a block then computes its scores
// against it as Dk vectorised axpys over the tile (s += q[d] * K^T[d, :]), so one key tile serves many
// query rows from L1 instead of being re-read from memory for each.
#pragma once

#include <algorithm>
#include <limits>
#include <vector>

#include "../key_lengths.h"
#include "../params.h"
#include "isa.h"
#include "row_math.h"
#include "tile_gemm.h"

namespace actattn {
namespace cpu {
inline namespace ACTATTN_CPU_ISA {

constexpr int64_t kKeyTile = 64;
// 128 query rows share each key tile load (the loads are scalar passes; at 32 rows they cost about a
// quarter of the forward's time), and their block's buffers still fit in L2 beside the tile.
constexpr int64_t kQueryBlock = 128;
static_assert(kKeyTile % kCols == 0 && kQueryBlock % kRows == 0, "tiles must hold whole register blocks");
// The backward's dK and dV walk a tile's keys kRows at a time (accumulate_columns_times_matrix): a
// tile must hold whole groups of kRows keys, or the last group writes past its buffers.
static_assert(kKeyTile % kRows == 0, "key tiles must hold whole groups of kRows keys");

// Rows [first, first + count) of a (batch, head) slice, times alpha, into dst (kQueryBlock x dim or
// kRows x dim); rows past `available` are zero so that padded register blocks contribute nothing.
template <typename T, typename Acc>
void load_rows(const RowView& view, int64_t b, int64_t h, int64_t first, int64_t count, int64_t available,
               int64_t dim, Acc alpha, Acc* dst) {
  for (int64_t r = 0; r < count; ++r) {
    Acc* out = dst + r * dim;
    if (first + r < available) {
      const T* src = row_ptr<T>(view, b, h, first + r);
      for (int64_t d = 0; d < dim; ++d) out[d] = alpha * Acc(src[d]);
    } else {
      std::fill(out, out + dim, Acc(0));
    }
  }
}

// Which copies of a key tile a pass reads, besides the transposed keys every pass multiplies by: the
// forward P V reads values by row; the backward's dP = dO V^T reads them transposed, and its dQ = dS K
// reads keys by row. A copy nobody reads is not made (each is a scalar pass over the tile, paid once
// per query block).
struct TileCopies {
  bool keys_by_row, values_by_row, values_transposed;
};

// Keys [start, start + cols): transposed (Dk x kKeyTile) and, as `copies` asks, row-major keys
// (kKeyTile x Dk), row-major values (kKeyTile x Dv) and transposed values (Dv x kKeyTile).
template <typename Acc>
struct KeyTile {
  int64_t start = 0, cols = 0;
  KeyBand band;  // of the tile's sequence (key_lengths.h)
  std::vector<Acc> k_t, k, v_t, v;

  KeyTile(int64_t qk_dim, int64_t v_dim)
      : k_t(qk_dim * kKeyTile), k(kKeyTile * qk_dim), v_t(v_dim * kKeyTile), v(kKeyTile * v_dim) {}

  template <typename T>
  void load(const QuadraticParams& p, int64_t b, int64_t h, int64_t start_, int64_t cols_, TileCopies copies) {
    start = start_;
    cols = cols_;
    band = key_band(p, keys_of(p.key_lengths, b, p.shape.k_len));
    const int64_t dk = p.shape.qk_dim, dv = p.shape.v_dim;
    for (int64_t t = 0; t < cols; ++t) {
      const T* kr = row_ptr<T>(p.k, b, h, start + t);
      const T* vr = row_ptr<T>(p.v, b, h, start + t);
      for (int64_t d = 0; d < dk; ++d) k_t[d * kKeyTile + t] = Acc(kr[d]);
      if (copies.keys_by_row)
        for (int64_t d = 0; d < dk; ++d) k[t * dk + d] = Acc(kr[d]);
      if (copies.values_by_row)
        for (int64_t e = 0; e < dv; ++e) v[t * dv + e] = Acc(vr[e]);
      if (copies.values_transposed)
        for (int64_t e = 0; e < dv; ++e) v_t[e * kKeyTile + t] = Acc(vr[e]);
    }
  }

  // The tile's keys [first, end) that query row i sees (all of them when not banded). Keys past the
  // sequence's length are not in the tile (`cols` stops at them).
  struct Range {
    int64_t first, end;
  };
  Range visible_to(int64_t i, bool banded) const {
    if (!banded) return {0, cols};
    const int64_t end = std::clamp<int64_t>(band.end(i) - start, 0, cols);
    return {std::min(std::clamp<int64_t>(band.begin(i) - start, 0, cols), end), end};
  }
};

}  // namespace ACTATTN_CPU_ISA
}  // namespace cpu
}  // namespace actattn
