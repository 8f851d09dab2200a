// Attention dropout's keep mask, for every backend: a counter-based generator, so that the backward
// regenerates the forward's mask from (seed, position) instead of storing an N x N mask, and so that
// the CPU and CUDA kernels drop the same pairs for the same seed.
//
// Generator: Philox4x32-10 (Salmon et al., "Parallel random numbers: as easy as 1, 2, 3", SC 2011; the
// generator torch and FlashAttention use). Key: the call's 64-bit seed (drawn from the torch generator of
// the inputs' device by the public API, so torch.manual_seed makes a run reproducible). Counter: (key / 4,
// query row, query row >> 32, 0), where the query row is (b * heads + h) * q_len + i over query heads; the
// four 32-bit words of one draw decide keys 4m .. 4m + 3 of that row. Key j is kept iff its word is below
// floor((1 - p) * 2^32); a kept weight is multiplied by 1 / (1 - p), a dropped one by 0 (p = 1 drops
// every weight and multiplies by 0, not by inf). python/actattn/reference.py implements the same mask.
#pragma once

#include <cstdint>

#include "host_device.h"
#include "params.h"

namespace actattn {

struct PhiloxWords {
  uint32_t x[4];
};

// The ten rounds on four scalar words, in place: on scalars (not an array) a CPU loop over draws
// vectorises (cpu/dropout_factors.h).
ACTATTN_HOST_DEVICE void philox4x32_10_rounds(uint32_t& c0, uint32_t& c1, uint32_t& c2, uint32_t& c3, uint64_t seed) {
  uint32_t key0 = static_cast<uint32_t>(seed), key1 = static_cast<uint32_t>(seed >> 32);
  for (int round = 0; round < 10; ++round) {
    const uint64_t product0 = uint64_t(0xD2511F53u) * c0;
    const uint64_t product1 = uint64_t(0xCD9E8D57u) * c2;
    const uint32_t next0 = static_cast<uint32_t>(product1 >> 32) ^ c1 ^ key0;
    const uint32_t next2 = static_cast<uint32_t>(product0 >> 32) ^ c3 ^ key1;
    c0 = next0;
    c1 = static_cast<uint32_t>(product1);
    c2 = next2;
    c3 = static_cast<uint32_t>(product0);
    key0 += 0x9E3779B9u;  // the Weyl sequence bumps the key between rounds
    key1 += 0xBB67AE85u;
  }
}

ACTATTN_HOST_DEVICE PhiloxWords philox4x32_10(PhiloxWords counter, uint64_t seed) {
  philox4x32_10_rounds(counter.x[0], counter.x[1], counter.x[2], counter.x[3], seed);
  return counter;
}

// The dropout of one call. Inactive (no draws, multiplier 1) when dropout_p is 0.
template <typename Acc>
struct Dropout {
  bool active = false;
  uint64_t seed = 0;
  uint64_t keep_below = 0;  // a word below this keeps its key: floor((1 - p) * 2^32)
  Acc kept_scale = Acc(1);  // 1 / (1 - p); 0 when p = 1

  // Reads the seed through params.dropout_seed (device memory in a CUDA kernel).
  ACTATTN_HOST_DEVICE static Dropout of(const QuadraticParams& p) {
    Dropout d;
    if (p.dropout_p <= 0.0) return d;
    d.active = true;
    d.seed = static_cast<uint64_t>(*p.dropout_seed);
    d.keep_below = static_cast<uint64_t>((1.0 - p.dropout_p) * 4294967296.0);
    d.kept_scale = p.dropout_p < 1.0 ? Acc(1.0 / (1.0 - p.dropout_p)) : Acc(0);
    return d;
  }

  ACTATTN_HOST_DEVICE PhiloxWords draw(int64_t query_row, int64_t key) const {
    const uint64_t row = static_cast<uint64_t>(query_row);
    return philox4x32_10({{static_cast<uint32_t>(key >> 2), static_cast<uint32_t>(row),
                           static_cast<uint32_t>(row >> 32), 0u}},
                         seed);
  }

  // The factor of one weight: 1 when inactive, else kept_scale or 0. Draws for one key (the generic
  // CUDA kernels and the tests' references); the CPU kernels draw once per four keys
  // (cpu/dropout_factors.h), the tensor-core kernels once per four across the lanes that hold them
  // (cuda/dropout_fragments.cuh).
  ACTATTN_HOST_DEVICE Acc multiplier(int64_t query_row, int64_t key) const {
    if (!active) return Acc(1);
    return draw(query_row, key).x[key & 3] < keep_below ? kept_scale : Acc(0);
  }
};

}  // namespace actattn
