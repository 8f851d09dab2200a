// Per-sequence key counts (padding) and the score constants that follow them, for every backend.
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
