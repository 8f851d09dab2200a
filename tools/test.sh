#!/usr/bin/env bash
# Runs every test: sets up (tools/bootstrap.sh), compiles the CUDA sources (tools/check_cuda.sh) and
# builds, links and imports the whole CUDA extension against torch's CUDA build (tools/check_cuda_build.sh;
# neither needs a GPU), then the Python suite (pytest; its CUDA cases run where a GPU is present) and the C++ suite
# (CMake build against the venv's LibTorch, then CTest, which also runs the tensor-core kernels on the
# CPU through kernels/cuda/warp_emulation.h), then both again against an AddressSanitizer +
# UndefinedBehaviorSanitizer build (tools/sanitize.sh). Exits non-zero if anything fails.
set -euo pipefail
cd "$(dirname "$0")/.."
bash tools/bootstrap.sh
bash tools/check_cuda.sh
bash tools/check_cuda_build.sh

status=0
.venv/bin/python -m pytest tests -q -p no:cacheprovider || status=$?
if [ "$status" -eq 5 ]; then
  echo "test.sh: pytest collected no tests; the suite is missing or broken" >&2
  exit 1
fi
[ "$status" -eq 0 ] || exit "$status"

torch_prefix=$(.venv/bin/python -c 'import torch; print(torch.utils.cmake_prefix_path)')
cmake -S . -B build/cmake -DCMAKE_PREFIX_PATH="$torch_prefix" >/dev/null
cmake --build build/cmake -j "$(nproc)"
# The emulated tensor-core kernel tests need only CUDA's headers, which check_cuda.sh already required.
# Listed into a variable first: `ctest | grep -q` under pipefail fails whenever grep exits before ctest has
# written everything (SIGPIPE), which is how this check once failed in CI with the test configured.
configured_tests=$(ctest --test-dir build/cmake -N)
for emulated in actattn_quadratic_emulation actattn_linear_emulation; do
  if ! grep -q "$emulated" <<<"$configured_tests"; then
    echo "test.sh: the emulated tensor-core kernel test $emulated was not configured (CUDA headers not found)" >&2
    exit 1
  fi
done
ctest --test-dir build/cmake --output-on-failure -j "$(nproc)"

# The C++ tests and the op, fuzz and kernel tests again, against an ASan + UBSan build.
bash tools/sanitize.sh
