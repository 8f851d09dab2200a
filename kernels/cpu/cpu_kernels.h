// Entry points of one ISA's build of the CPU kernels (isa.h). Each reads its params struct
// (kernels/params.h) and dispatches dtype, activation / feature map and masking to a template through
// kernels/dispatch.h. Callers outside kernels/cpu/ go through kernels/cpu_isa.h, which picks the build.
#pragma once

#include "../cpu_isa.h"
#include "../params.h"
#include "isa.h"

namespace actattn {
namespace cpu {
inline namespace ACTATTN_CPU_ISA {

void quadratic_attention_forward(const QuadraticParams& params);
void quadratic_attention_backward(const QuadraticParams& params);
void linear_attention_forward(const LinearParams& params);
void linear_attention_backward(const LinearParams& params);

// The four above as a table (kernel_table.cpp), which cpu_isa.cpp chooses among.
extern const KernelTable kernels;

}  // namespace ACTATTN_CPU_ISA
}  // namespace cpu
}  // namespace actattn
