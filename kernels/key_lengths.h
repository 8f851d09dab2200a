// Per-sequence key counts (padding), the causal mask and sliding window that follow them, and the score
// constants that follow them, for every backend.
#pragma once

#include <cmath>
#include <cstdint>

#include "host_device.h"
#include "params.h"

namespace actattn {

// Keys of sequence b: key_lengths[b] clamped to [0, k_len], or k_len when there are no lengths.
ACTATTN_HOST_DEVICE int64_t keys_of(const int64_t* key_lengths, int64_t b, int64_t k_len) {
  if (key_lengths == nullptr) return k_len;
  const int64_t n = key_lengths[b];
  return n < 0 ? 0 : (n > k_len ? k_len : n);
}

ACTATTN_HOST_DEVICE int64_t clamp_index(int64_t x, int64_t low, int64_t high) {
  return x < low ? low : (x > high ? high : x);
}

// The keys each query of one sequence sees by position: query i sees keys [begin(i), end(i)) of the
// sequence's n keys, j in i + offset - left .. i + offset + right (a side < 0 is unbounded). The offset
// aligns queries with keys: 0 top-left, n - q_len bottom-right; with more queries than keys it is
// negative, and the first rows may see no key at all (zero output, log-sum-exp -inf). Causal is the
// band with right = 0; a sliding window sets either side; neither: every key.
struct KeyBand {
  int64_t offset = 0, keys = 0, left = -1, right = -1;

  ACTATTN_HOST_DEVICE int64_t begin(int64_t i) const { return left < 0 ? 0 : clamp_index(i + offset - left, 0, keys); }
  ACTATTN_HOST_DEVICE int64_t end(int64_t i) const {
    return right < 0 ? keys : clamp_index(i + offset + right + 1, 0, keys);
  }
  // Queries [first_query(j), query_end(j)) of q_len see key j.
  ACTATTN_HOST_DEVICE int64_t first_query(int64_t j, int64_t q_len) const {
    return right < 0 ? 0 : clamp_index(j - offset - right, 0, q_len);
  }
  ACTATTN_HOST_DEVICE int64_t query_end(int64_t j, int64_t q_len) const {
    return left < 0 ? q_len : clamp_index(j - offset + left + 1, 0, q_len);
  }
  ACTATTN_HOST_DEVICE bool sees(int64_t i, int64_t j) const {
    return (left < 0 || j >= i + offset - left) && (right < 0 || j <= i + offset + right);
  }
};

// The band of a sequence with n keys (the key lengths' count, not k_len, for bottom-right alignment).
ACTATTN_HOST_DEVICE KeyBand key_band(const QuadraticParams& p, int64_t keys) {
  KeyBand band;
  band.offset = p.causal_bottom_right ? keys - p.shape.q_len : 0;
  band.keys = keys;
  band.left = p.window_left;
  band.right = p.causal ? 0 : p.window_right;
  return band;
}

// The bias and 1 / divisor of sequence b: sigmoid's default bias is -log(n) and relu's default divisor
// n for its n keys (max(n, 1), so that a sequence without keys stays finite).
template <typename Acc>
struct SequenceConstants {
  Acc bias;
  Acc inv_divisor;
};

template <typename Acc>
ACTATTN_HOST_DEVICE SequenceConstants<Acc> sequence_constants(const QuadraticParams& p, int64_t b) {
  const int64_t n = keys_of(p.key_lengths, b, p.shape.k_len);
  const double keys = n > 1 ? static_cast<double>(n) : 1.0;
  SequenceConstants<Acc> c;
  c.bias = Acc(p.bias_follows_keys ? -std::log(keys) : p.bias);
  c.inv_divisor = Acc(1.0 / (p.divisor_follows_keys ? keys : p.divisor));
  return c;
}

}  // namespace actattn
