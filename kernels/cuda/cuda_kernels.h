// Entry points of the CUDA kernels: each reads its params struct (kernels/params.h), dispatches dtype,
// activation / feature map and masking through kernels/dispatch.h, and launches on `stream` without
// synchronising. Pointers are device pointers; workspaces are allocated by the caller.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

#include "../params.h"

namespace actattn {

void quadratic_attention_forward_cuda(const QuadraticParams& params, cudaStream_t stream);
void quadratic_attention_backward_cuda(const QuadraticParams& params, cudaStream_t stream);

// Elements of accumulation type the linear forward / backward needs in params.workspace.
int64_t linear_attention_forward_workspace(const LinearParams& params);
int64_t linear_attention_backward_workspace(const LinearParams& params);
void linear_attention_forward_cuda(const LinearParams& params, cudaStream_t stream);
void linear_attention_backward_cuda(const LinearParams& params, cudaStream_t stream);

}  // namespace actattn
