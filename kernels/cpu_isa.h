// The CPU kernels' entry points, each running the best build of kernels/cpu/ for this CPU. The library
// holds one build per vector ISA (kernels/cpu/isa.h): on x86-64 `avx512` (x86-64-v4), `avx2`
// (x86-64-v3) and `baseline` (any x86-64), elsewhere `baseline` only. The first call picks the best
// build the CPU and the OS support, or the one the environment variable ACTATTN_CPU_ISA names
// (baseline, avx2 or avx512: how the tests run each build on one machine). A name that is no build of
// this library, or one this CPU cannot run, is an error rather than a quiet fallback, so that a run
// forced onto a build never tests another.
#pragma once

#include "params.h"

namespace actattn {
namespace cpu {

// One build's entry points.
struct KernelTable {
  void (*quadratic_forward)(const QuadraticParams&);
  void (*quadratic_backward)(const QuadraticParams&);
  void (*linear_forward)(const LinearParams&);
  void (*linear_backward)(const LinearParams&);
};

}  // namespace cpu

// The name of the build the kernels run ("avx512", "avx2" or "baseline"). Throws std::runtime_error,
// as every entry point below does, when ACTATTN_CPU_ISA names no build this CPU can run.
const char* cpu_isa();

void quadratic_attention_forward_cpu(const QuadraticParams& params);
void quadratic_attention_backward_cpu(const QuadraticParams& params);
void linear_attention_forward_cpu(const LinearParams& params);
void linear_attention_backward_cpu(const LinearParams& params);

}  // namespace actattn
