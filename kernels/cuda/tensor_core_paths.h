// Which calls take the tensor-core kernels, and their entry points. The generic kernels (warp per row)
// serve every other call: float32, float64, head dims without a tiled instantiation, unaligned rows,
// GPUs older than sm_80.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>
#include <cstdlib>
#include <cstring>

#include "../params.h"

namespace actattn {
namespace cuda {

// Head dims with a tiled instantiation (kernels/dispatch.h instantiates them): Dk = Dv = 32, 64, 96 or
// 128 in both op families, and 256; quadratic attention also (Dk, Dv) = (192, 128), linear attention
// (64, 128) and (128, 64).
inline bool tensor_core_head_dim(int64_t dim) { return dim == 32 || dim == 64 || dim == 96 || dim == 128; }
inline bool quadratic_tensor_core_head_dims(int64_t qk_dim, int64_t v_dim) {
  return qk_dim == v_dim ? tensor_core_head_dim(qk_dim) || qk_dim == 256 : qk_dim == 192 && v_dim == 128;
}
inline bool linear_tensor_core_head_dims(int64_t qk_dim, int64_t v_dim) {
  return qk_dim == v_dim ? tensor_core_head_dim(qk_dim) || qk_dim == 256
                         : (qk_dim == 64 && v_dim == 128) || (qk_dim == 128 && v_dim == 64);
}

inline bool is_half_type(ScalarKind kind) { return kind == ScalarKind::kFloat16 || kind == ScalarKind::kBFloat16; }

// The tiles are copied 16 bytes (8 elements) at a time.
inline bool rows_aligned(const RowView& view) {
  return view.data == nullptr || (reinterpret_cast<uintptr_t>(view.data) % 16 == 0 && view.batch_stride % 8 == 0 &&
                                  view.head_stride % 8 == 0 && view.row_stride % 8 == 0);
}

// mma.sync with bfloat16 and ldmatrix need sm_80; asked of the current device (no synchronisation).
inline bool device_has_sm80() {
  int device = 0, major = 0;
  if (cudaGetDevice(&device) != cudaSuccess) return false;
  if (cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, device) != cudaSuccess) return false;
  return major >= 8;
}

// Dynamic shared memory one block may opt into on the current device (99 KiB on sm_86 / sm_89,
// 163 KiB on A100, 227 KiB on H100 / H200).
inline int device_shared_bytes_optin() {
  int device = 0, bytes = 0;
  if (cudaGetDevice(&device) != cudaSuccess) return 0;
  if (cudaDeviceGetAttribute(&bytes, cudaDevAttrMaxSharedMemoryPerBlockOptin, device) != cudaSuccess) return 0;
  return bytes;
}

// ACTATTN_COMPACT_TILES=1: the backward kernels' compact tiles (those of GPUs granting a block 99 KiB of
// shared memory: sm_86 / 89) on any GPU, so that one with room for the full tiles can test them
// (tests/test_attention.py, tests/test_linear_attention.py).
inline bool compact_tiles_forced() {
  const char* forced = std::getenv("ACTATTN_COMPACT_TILES");
  return forced != nullptr && std::strcmp(forced, "1") == 0;
}

template <typename Params>
bool all_rows_aligned(const Params& p, bool backward) {
  bool aligned = rows_aligned(p.q) && rows_aligned(p.k) && rows_aligned(p.v) && rows_aligned(p.out);
  if (backward) {
    aligned = aligned && rows_aligned(p.grad_out) && rows_aligned(p.grad_q) && rows_aligned(p.grad_k) &&
              rows_aligned(p.grad_v);
  }
  return aligned;
}

// Why a float16 / bfloat16 call cannot take the tensor-core kernels, in words for a warning; null when
// it takes them (float32 and float64 never do, and get null: the generic kernels are their path).
template <typename Params>
const char* common_tensor_core_refusal(const Params& p, bool backward) {
  if (!is_half_type(p.dtype)) return nullptr;
  if (!all_rows_aligned(p, backward)) {
    return "a tensor's rows are not 16-byte aligned (a data pointer, or a stride not a multiple of 8 elements)";
  }
  if (!device_has_sm80()) return "the GPU is older than sm_80 (bfloat16 mma.sync and ldmatrix need sm_80)";
  return nullptr;
}

// The least shared memory a block of the tensor-core quadratic backward needs at a tiled head dim
// (quadratic_backward_tc.cuh).
int quadratic_backward_tensor_core_shared_bytes(int64_t qk_dim, int64_t v_dim);

inline const char* quadratic_tensor_core_refusal(const QuadraticParams& p, bool backward) {
  if (const char* refusal = common_tensor_core_refusal(p, backward)) return refusal;
  if (!is_half_type(p.dtype)) return nullptr;
  if (!quadratic_tensor_core_head_dims(p.shape.qk_dim, p.shape.v_dim)) {
    return p.shape.qk_dim == p.shape.v_dim
               ? "the head dim is not 32, 64, 96, 128 or 256, the dims with quadratic tensor-core kernels"
               : "q and v have different head dims other than (192, 128), the pair with quadratic tensor-core "
                 "kernels";
  }
  if (backward && quadratic_backward_tensor_core_shared_bytes(p.shape.qk_dim, p.shape.v_dim) >
                      device_shared_bytes_optin()) {
    return "the GPU grants a block less shared memory than the tensor-core backward needs at this head dim "
           "(99 KiB at head dim 256, less at the others)";
  }
  return nullptr;
}

inline bool quadratic_takes_tensor_cores(const QuadraticParams& p, bool backward) {
  return is_half_type(p.dtype) && quadratic_tensor_core_refusal(p, backward) == nullptr;
}

// Shared memory of the tensor-core linear kernels at a tiled head dim (linear_*_tc.cuh).
int linear_forward_tensor_core_shared_bytes(int64_t qk_dim, int64_t v_dim);
int linear_backward_tensor_core_shared_bytes(int64_t qk_dim, int64_t v_dim);

// The chunk-parallel backward's blocks hold a D x D state tile besides four chunk tiles: 104 KiB at
// D = 128, which A100 and H100-class GPUs grant; sm_86/89 (99 KiB) run them in compact layouts (87 KiB,
// linear_backward_tc.cuh's Tiles). At D = 256 its value groups' blocks hold a 256 x 64 state slice and
// take 123 KiB (A100 and H100-class GPUs), or 96 in the compact layouts (sm_86/89). The forward's tiles
// (67 KiB at D = 128, 77 KiB at 256) fit every sm_80+ GPU.
inline const char* linear_tensor_core_refusal(const LinearParams& p, bool backward) {
  if (const char* refusal = common_tensor_core_refusal(p, backward)) return refusal;
  if (!is_half_type(p.dtype)) return nullptr;
  if (!linear_tensor_core_head_dims(p.shape.qk_dim, p.shape.v_dim)) {
    return p.shape.qk_dim == p.shape.v_dim
               ? "the head dim is not 32, 64, 96, 128 or 256, the dims with linear tensor-core kernels"
               : "q and v have different head dims other than (64, 128) and (128, 64), the pairs with linear "
                 "tensor-core kernels";
  }
  const int shared = backward ? linear_backward_tensor_core_shared_bytes(p.shape.qk_dim, p.shape.v_dim)
                              : linear_forward_tensor_core_shared_bytes(p.shape.qk_dim, p.shape.v_dim);
  if (shared > device_shared_bytes_optin()) {
    return "the GPU grants a block less shared memory than the tensor-core kernels need at these head dims "
           "(for the backward 96 KiB at head dim 256, 87 KiB at 128, less at the others)";
  }
  return nullptr;
}

inline bool linear_takes_tensor_cores(const LinearParams& p, bool backward) {
  return is_half_type(p.dtype) && linear_tensor_core_refusal(p, backward) == nullptr;
}

void quadratic_forward_tensor_core(const QuadraticParams& params, cudaStream_t stream);
// dK, dV and dQ; the caller has written params.delta (softmax).
void quadratic_backward_tensor_core(const QuadraticParams& params, cudaStream_t stream);
// Float32 elements of params.workspace the chunk-parallel forward needs (per-chunk states).
int64_t linear_forward_tensor_core_workspace(const LinearParams& params);
void linear_forward_tensor_core(const LinearParams& params, cudaStream_t stream);
// Float32 elements of params.workspace the chunk-parallel backward needs (per-chunk states and their
// gradients).
int64_t linear_backward_tensor_core_workspace(const LinearParams& params);
// dq, dk, dv and the initial state's gradients.
void linear_backward_tensor_core(const LinearParams& params, cudaStream_t stream);

}  // namespace cuda
}  // namespace actattn
