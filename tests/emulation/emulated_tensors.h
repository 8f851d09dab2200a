// Test tensors for the emulated CUDA kernel tests (tests/emulation/*.cpp): (B, H, N, D) tensors of 16-bit
// (or, for the generic kernels, float32 / float64) elements stored contiguously or as (B, N, H, D),
// random fill, the error measure and the case loop.
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <random>
#include <string>
#include <type_traits>
#include <vector>

#include "../../kernels/params.h"

namespace actattn {
namespace emulation_test {

// A (B, H, N, D) tensor stored contiguously or as (B, N, H, D).
template <typename T>
struct EmulatedTensor {
  int64_t batch, heads, rows, dim;
  bool interleaved;
  std::vector<T> data;

  EmulatedTensor(int64_t b, int64_t h, int64_t n, int64_t d, bool inter)
      : batch(b), heads(h), rows(n), dim(d), interleaved(inter), data(b * h * n * d + 8) {}
  int64_t offset(int64_t b, int64_t h, int64_t n) const {
    return interleaved ? ((b * rows + n) * heads + h) * dim : ((b * heads + h) * rows + n) * dim;
  }
  double at(int64_t b, int64_t h, int64_t n, int64_t d) const {
    if constexpr (std::is_floating_point_v<T>) {
      return static_cast<double>(data[offset(b, h, n) + d]);
    } else {
      return static_cast<float>(data[offset(b, h, n) + d]);
    }
  }
  RowView view() {
    RowView v;
    v.data = data.data();
    v.batch_stride = interleaved ? rows * heads * dim : heads * rows * dim;
    v.head_stride = interleaved ? dim : rows * dim;
    v.row_stride = interleaved ? heads * dim : dim;
    return v;
  }
};

template <typename T>
EmulatedTensor<T> random_tensor(int64_t b, int64_t h, int64_t n, int64_t d, bool inter, std::mt19937& gen) {
  EmulatedTensor<T> t(b, h, n, d, inter);
  std::normal_distribution<float> normal;
  for (auto& x : t.data) x = T(normal(gen));
  return t;
}

// max |got - want| / max(max |want|, floor), over a (B, H, N, D) tensor. The floor is the scale below
// which a reference is rounding noise of terms that cancel: softmax with one visible key has dq = dk =
// 0 exactly (dp - delta), and half-precision kernels leave O(1e-4) of the O(1) terms there.
template <typename T>
inline double relative_error(const EmulatedTensor<T>& got, const std::vector<double>& want, double floor = 1e-30) {
  double err = 0, norm = floor;
  for (int64_t b = 0; b < got.batch; ++b)
    for (int64_t h = 0; h < got.heads; ++h)
      for (int64_t n = 0; n < got.rows; ++n)
        for (int64_t d = 0; d < got.dim; ++d) {
          const double w = want[((b * got.heads + h) * got.rows + n) * got.dim + d];
          const double g = got.at(b, h, n, d);
          if (!std::isfinite(g)) return INFINITY;
          err = std::max(err, std::abs(g - w));
          norm = std::max(norm, std::abs(w));
        }
  return err / norm;
}

// A case's element type and head dim, as types for check_case<T, kD>.
template <typename T, int kD>
struct Kind {
  using type = T;
  static constexpr int dim = kD;
};

// Runs check(case, gen) under every schedule of the emulation (the same inputs under each), naming the
// schedule when there is more than one; true if it passes under all.
template <typename Case, typename CheckOne>
bool check_under_every_schedule(const Case& c, std::mt19937& gen, CheckOne&& check_one) {
  using namespace actattn::cuda::emulation;
  const std::vector<Schedule> schedules = schedules_to_test();
  std::mt19937 case_gen = gen;
  bool ok = true;
  for (Schedule s : schedules) {
    schedule = s;
    case_gen = gen;
    if (schedules.size() > 1) std::printf("%-12s ", schedule_name(s));
    ok = check_one(c, case_gen) && ok;
  }
  gen = case_gen;
  return ok;
}

// Runs check(kind, case, gen) for each case whose name contains `filter` (kind from the case's `half`
// and `dim`, which must be one of kDims) under every schedule, prints the tally and returns main's exit
// code: 1 if any case failed or none ran.
template <int... kDims, typename Case, typename Check>
int run_cases(const std::vector<Case>& cases, const std::string& filter, Check&& check) {
  std::mt19937 gen(0);
  int failures = 0, run = 0;
  for (const Case& c : cases) {
    if (c.name().find(filter) == std::string::npos) continue;
    ++run;
    bool ok = false;
    const bool dim_found =
        ((c.dim == kDims && (ok = check_under_every_schedule(c, gen,
                                                             [&](const Case& c, std::mt19937& g) {
                                                               return c.half ? check(Kind<__half, kDims>{}, c, g)
                                                                             : check(Kind<__nv_bfloat16, kDims>{}, c, g);
                                                             }),
                             true)) ||
         ...);
    if (!dim_found) std::printf("FAIL %s: no instantiation for this head dim\n", c.name().c_str());
    failures += !ok;
  }
  std::printf("%d of %d cases failed\n", failures, run);
  return failures == 0 && run > 0 ? 0 : 1;
}

}  // namespace emulation_test
}  // namespace actattn
