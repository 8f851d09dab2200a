// Test tensors for the emulated CUDA kernel tests (tests/emulation/*.cpp): (B, H, N, D) tensors of 16-bit
// (or, for the generic kernels, float32 / float64) elements stored contiguously or as (B, N, H, D),
// random fill, the error measure and the case loop.
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <algorithm>
#include <array>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <random>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

#include "../../kernels/params.h"

#ifdef ACTATTN_EMULATION_TSAN
#include <sys/wait.h>
#include <unistd.h>
#endif

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

// A compile-time value as a type: how run_cases hands a case's kernel choice to a generic lambda.
template <auto kValue>
struct Constant {
  static constexpr auto value = kValue;
};

// The cases a build runs, as an array: under ThreadSanitizer, which makes a case 20-100x slower, the few
// of tsan_cases(), otherwise plain_cases() (constexpr functions returning a std::vector, which cannot
// outlive a constant evaluation).
template <auto plain_cases, auto tsan_cases>
constexpr auto cases_of_this_build() {
#ifdef ACTATTN_EMULATION_TSAN
  constexpr auto cases = tsan_cases;
#else
  constexpr auto cases = plain_cases;
#endif
  std::array<typename decltype(cases())::value_type, cases().size()> out{};
  const auto list = cases();
  for (std::size_t i = 0; i < out.size(); ++i) out[i] = list[i];
  return out;
}

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

// Runs check(Constant<case.kernels()>{}, case, gen) for each case of kCases (a constexpr array) whose name
// contains the filter (argv[1]), under every schedule; prints the tally and returns main's exit code: 1 if
// any case failed or none ran. `--list` prints the cases' names instead. A case's kernels() (its element
// type, head dims and the kernels' other template arguments) becomes a template argument here, so a test
// binary instantiates the kernels its cases run and no others: the ThreadSanitizer builds, which run a
// few cases, compile a fraction of the plain builds' kernels.
template <const auto& kCases, typename Check>
int run_cases(int argc, char** argv, Check&& check) {
  const std::string filter = argc > 1 ? argv[1] : "";
  if (filter == "--list") {
    for (const auto& c : kCases) std::printf("%s\n", c.name().c_str());
    return 0;
  }
  std::mt19937 gen(0);
  int failures = 0, run = 0;
  const auto run_case = [&]<std::size_t kIndex>(std::integral_constant<std::size_t, kIndex>) {
    const auto& c = kCases[kIndex];
    if (c.name().find(filter) == std::string::npos) return;
    ++run;
    const auto check_one = [&] {
      return check_under_every_schedule(c, gen, [&](const auto& c, std::mt19937& g) {
        return check(Constant<kCases[kIndex].kernels()>{}, c, g);
      });
    };
#ifdef ACTATTN_EMULATION_TSAN
    // Under TSan each case runs in a process of its own, as if run alone: TSan's bookkeeping grows over a
    // process's life (the five linear cases took 191 s in one process, 76 s in five; 2026-12-02). The
    // child leaves through exit(), where TSan turns a reported race into exit status 66.
    std::fflush(stdout);
    const pid_t child = fork();
    if (child == 0) std::exit(check_one() ? 0 : 1);
    int status = 0;
    const bool ok = child > 0 && waitpid(child, &status, 0) == child && WIFEXITED(status) && WEXITSTATUS(status) == 0;
    if (!ok) {
      std::printf("FAIL %s: its process %s %d%s\n", c.name().c_str(),
                  WIFSIGNALED(status) ? "was killed by signal" : "exited with status",
                  WIFSIGNALED(status) ? WTERMSIG(status) : WEXITSTATUS(status),
                  WIFEXITED(status) && WEXITSTATUS(status) == 66 ? " (ThreadSanitizer reported a race)" : "");
    }
    failures += !ok;
#else
    failures += !check_one();
#endif
  };
  [&]<std::size_t... kIndices>(std::index_sequence<kIndices...>) {
    (run_case(std::integral_constant<std::size_t, kIndices>{}), ...);
  }(std::make_index_sequence<kCases.size()>{});
  std::printf("%d of %d cases failed\n", failures, run);
  return failures == 0 && run > 0 ? 0 : 1;
}

}  // namespace emulation_test
}  // namespace actattn
