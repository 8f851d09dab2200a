// This build's entry points as one table. It is constant-initialised (addresses only), so reading it
// runs none of this build's code: cpu_isa.cpp can look at the avx512 table on any CPU.
#include "cpu_kernels.h"

namespace actattn {
namespace cpu {
inline namespace ACTATTN_CPU_ISA {

const KernelTable kernels = {quadratic_attention_forward, quadratic_attention_backward, linear_attention_forward,
                             linear_attention_backward};

}  // namespace ACTATTN_CPU_ISA
}  // namespace cpu
}  // namespace actattn
