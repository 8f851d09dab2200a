// Per-sequence key counts (padding), the causal mask that follows them, and the score constants that
// follow them, for every backend.
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

// Causal: query i of a sequence with n keys sees keys j <= i + causal_offset, so j < i + 1 + offset.
// The offset is 0 top-left aligned and n - q_len bottom-right aligned; with more queries than keys
// it is negative, and the first rows then see no key at all (zero output, log-sum-exp -inf).
ACTATTN_HOST_DEVICE int64_t causal_offset(const QuadraticParams& p, int64_t keys) {
  return p.causal_bottom_right ? keys - p.shape.q_len : 0;
}

// Keys [0, causal_key_end) of n keys visible to query i under the causal mask (never past n, never < 0).
ACTATTN_HOST_DEVICE int64_t causal_key_end(int64_t i, int64_t offset, int64_t keys) {
  const int64_t end = i + 1 + offset;
  return end < 0 ? 0 : (end > keys ? keys : end);
}

// The first query that sees key j under the causal mask (every later query sees it too).
ACTATTN_HOST_DEVICE int64_t first_causal_query(int64_t j, int64_t offset) { return j - offset > 0 ? j - offset : 0; }

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
