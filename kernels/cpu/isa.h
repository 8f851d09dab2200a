// The vector instruction set (ISA) this build of the CPU kernels is for. Everything in kernels/cpu/
// is compiled once per ISA (setup.py, CMakeLists.txt): `baseline` with the compiler's default flags
// (SSE2 on x86-64), and on x86-64 also `avx2` (-march=x86-64-v3: AVX2, FMA, F16C, BMI) and `avx512`
// (-march=x86-64-v4, 512-bit vectors preferred). ACTATTN_CPU_ISA names the build, and every function
// of it lives in the inline namespace actattn::cpu::<ISA>. The namespace is what keeps the builds
// apart: without it the linker keeps one copy of each inline function and template for all builds
// (whichever object comes first), and a CPU without AVX-512 could be handed the avx512 copy.
// kernels/cpu_isa.h picks a build at run time.
#pragma once

#ifndef ACTATTN_CPU_ISA
#define ACTATTN_CPU_ISA baseline
#endif
