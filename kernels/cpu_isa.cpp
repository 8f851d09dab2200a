// Picks the build of the CPU kernels to run (cpu_isa.h). Compiled once, with the compiler's default
// flags, like everything outside kernels/cpu/: its code must run on any CPU, including the one it
// then rules out. The build (setup.py, CMakeLists.txt) defines ACTATTN_CPU_BUILD_<NAME> for each extra
// build it compiled (kernels/cpu/isa_builds.txt), so this file never names a build the library lacks.
#include "cpu_isa.h"

#include <cstdlib>
#include <iterator>
#include <stdexcept>
#include <string>

namespace actattn {
namespace cpu {

// Each build's table (kernels/cpu/kernel_table.cpp).
namespace baseline {
extern const KernelTable kernels;
}
#if defined(ACTATTN_CPU_BUILD_AVX2)
namespace avx2 {
extern const KernelTable kernels;
}
#endif
#if defined(ACTATTN_CPU_BUILD_AVX512)
namespace avx512 {
extern const KernelTable kernels;
}
#endif

namespace {

struct Build {
  const char* name;
  const KernelTable* kernels;
  bool (*runs_here)();
};

// The x86-64 micro-architecture levels the builds are compiled for (isa_builds.txt); libgcc's check
// includes the OS's support for saving the AVX and AVX-512 registers.
#if defined(ACTATTN_CPU_BUILD_AVX2)
bool has_x86_64_v3() { return __builtin_cpu_supports("x86-64-v3"); }
#endif
#if defined(ACTATTN_CPU_BUILD_AVX512)
bool has_x86_64_v4() { return __builtin_cpu_supports("x86-64-v4"); }
#endif
bool always() { return true; }

// Best first.
constexpr Build kBuilds[] = {
#if defined(ACTATTN_CPU_BUILD_AVX512)
    {"avx512", &avx512::kernels, has_x86_64_v4},
#endif
#if defined(ACTATTN_CPU_BUILD_AVX2)
    {"avx2", &avx2::kernels, has_x86_64_v3},
#endif
    {"baseline", &baseline::kernels, always},
};

std::string build_names() {
  std::string names;
  for (const Build& build : kBuilds) names += std::string(names.empty() ? "" : ", ") + build.name;
  return names;
}

const Build& best_build() {
  for (const Build& build : kBuilds)
    if (build.runs_here()) return build;
  return kBuilds[std::size(kBuilds) - 1];
}

const Build& choose_build() {
  const char* forced = std::getenv("ACTATTN_CPU_ISA");
  if (forced == nullptr || *forced == '\0') return best_build();
  for (const Build& build : kBuilds) {
    if (std::string(forced) != build.name) continue;
    if (!build.runs_here())
      throw std::runtime_error(std::string("ACTATTN_CPU_ISA=") + forced + " asks for the " + build.name +
                               " build of actattn's CPU kernels, which this CPU cannot run (the best it can run is " +
                               best_build().name + ")");
    return build;
  }
  throw std::runtime_error(std::string("ACTATTN_CPU_ISA=") + forced +
                           " names no build of actattn's CPU kernels; this library has " + build_names() +
                           " (unset it to pick the best for this CPU)");
}

// Chosen at the first call; a choice that throws is retried (and throws again) at the next.
const Build& chosen_build() {
  static const Build& build = choose_build();
  return build;
}

const KernelTable& chosen() { return *chosen_build().kernels; }

}  // namespace
}  // namespace cpu

const char* cpu_isa() { return cpu::chosen_build().name; }

void quadratic_attention_forward_cpu(const QuadraticParams& params) { cpu::chosen().quadratic_forward(params); }
void quadratic_attention_backward_cpu(const QuadraticParams& params) { cpu::chosen().quadratic_backward(params); }
void linear_attention_forward_cpu(const LinearParams& params) { cpu::chosen().linear_forward(params); }
void linear_attention_backward_cpu(const LinearParams& params) { cpu::chosen().linear_backward(params); }

}  // namespace actattn
