// Checks the warp emulation's model of what orders memory, under ThreadSanitizer (CMakeLists.txt runs
// it twice): lane 0 writes shared memory and lane 1 of the same warp reads it, with a shuffle between
// them (`shuffle`) or a __syncthreads (`barrier`). A shuffle does not order the lanes' other memory
// accesses on Volta and later, so TSan must report the first and not the second; the kernels' TSan
// tests rely on both halves (no false report, and a warp's collectives never hiding a race).
#define ACTATTN_WARP_EMULATION
#include "../../kernels/cuda/warp_emulation.h"

#include <cstdio>
#include <cstring>

using namespace actattn::cuda;

int main(int argc, char** argv) {
  if (argc != 2 || (std::strcmp(argv[1], "shuffle") != 0 && std::strcmp(argv[1], "barrier") != 0)) {
    std::fprintf(stderr, "usage: %s shuffle|barrier\n", argv[0]);
    return 2;
  }
  const bool barrier = std::strcmp(argv[1], "barrier") == 0;
  float read = 0.f;
  emulation::launch(dim3(1), 32, [&] {
    float* shared = dynamic_shared<float>();
    if (threadIdx.x == 0) shared[0] = 42.f;
    const float other = __shfl_xor_sync(0xffffffffu, static_cast<float>(threadIdx.x), 1);
    if (barrier) __syncthreads();
    if (threadIdx.x == 1) read = shared[0] + other;
  });
  std::printf("lane 1 read %g (42 + lane 0's 0)\n", read);
  return read == 42.f ? 0 : 1;
}
