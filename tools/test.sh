#!/usr/bin/env bash
# Runs every test: sets up (tools/bootstrap.sh); builds, links and imports the whole CUDA extension against
# torch's CUDA build (tools/check_cuda_build.sh, no GPU needed; where the disk is too small for torch's CUDA
# build it only compiles the CUDA sources, tools/check_cuda.sh, which the full build would repeat) in the
# background, at low priority, beside everything else; the
# Python suite (pytest; its CUDA cases run where a GPU is present) and its op tests again on every lower ISA
# build of the CPU kernels, the wheel a user would build, installed
# into a fresh venv (tools/check_install.sh), the tensor-core kernels on the CPU through
# kernels/cuda/warp_emulation.h (CTest), and tools/sanitize.sh: the library's C++ CTest suite against
# LibTorch and a part of pytest under AddressSanitizer + UndefinedBehaviorSanitizer. Exits non-zero if
# anything fails.
set -euo pipefail
cd "$(dirname "$0")/.."
# Each phase's wall time and the CPU time of the commands it waited for (user + system, from `times`; the
# background CUDA build check's is counted when it is waited for), so that CI's total can be traced to its
# parts: on 2 cores CI takes at least half its CPU time.
# `times` runs in this shell, written to a file: in a command substitution's subshell it would count that
# subshell's children only.
mkdir -p build
times_file=build/test-sh-times.txt
children_cpu_seconds() { awk 'NR == 2 { split($0, t, /[ms ]+/); print int(t[1] * 60 + t[2] + t[3] * 60 + t[4]) }' "$times_file"; }
phase_start=$SECONDS
times >"$times_file"
phase_cpu_start=$(children_cpu_seconds)
phase_took() {
  local cpu
  times >"$times_file"
  cpu=$(children_cpu_seconds)
  echo "test.sh: $1 took $((SECONDS - phase_start)) s ($((cpu - phase_cpu_start)) CPU-seconds)"
  phase_start=$SECONDS
  phase_cpu_start=$cpu
}

# The CUDA build check needs nothing from bootstrap (its own venv, .venv-cuda, with torch's CUDA build: a
# 5.5 GB download, then about 20 CPU-minutes of nvcc and g++), so it starts first and runs in the background
# at low priority: it takes the core that downloads, pip and the single-threaded parts of pytest leave
# idle, and the foreground phases keep priority. Its result is collected at the end. `wait` on exit, so
# that a failing run never leaves a half-written .venv-cuda behind.
# torch's extension builds put ccache in front of their compilers (nvcc too) when it is installed, which
# bootstrap sees to: the wheel check's build then reuses the objects bootstrap's build compiled from the
# same sources with the same flags and torch (ccache compares the preprocessed source, so a changed
# header still recompiles). Its cache lives in build/, so that a clean clone starts from an empty one and
# the CUDA build check always compiles, and prints its register report.
export CCACHE_DIR="$PWD/build/ccache" CCACHE_NOHASHDIR=1
cuda_check_log=build/cuda-build-check.log
nice -n 15 bash tools/check_cuda_build.sh >"$cuda_check_log" 2>&1 &
cuda_check=$!
cuda_check_start=$SECONDS
trap wait EXIT
bash tools/bootstrap.sh
phase_took "bootstrap"

status=0
.venv/bin/python -m pytest tests -q -p no:cacheprovider || status=$?
if [ "$status" -eq 5 ]; then
  echo "test.sh: pytest collected no tests; the suite is missing or broken" >&2
  exit 1
fi
[ "$status" -eq 0 ] || exit "$status"
phase_took "pytest"

# The CPU kernels' other builds (kernels/cpu_isa.h): the suite above ran the best build this CPU runs;
# the op tests run again on every build below it (each ISA contains the next, so this CPU runs them).
cpu_op_tests=(tests/test_attention.py tests/test_linear_attention.py tests/test_half_types_cpu.py
  tests/test_key_lengths.py tests/test_window.py tests/test_dropout.py tests/test_decoding.py tests/test_nonfinite.py
  tests/test_determinism.py tests/test_fuzz.py)
best_isa=$(.venv/bin/python -c 'import actattn; print(actattn.cpu_isa())')
case "$best_isa" in
  avx512) lower_isas=(avx2 baseline) ;;
  avx2) lower_isas=(baseline) ;;
  *) lower_isas=() ;;
esac
for isa in "${lower_isas[@]}"; do
  echo "test.sh: the CPU op tests on the $isa build of the CPU kernels (the best here is $best_isa)"
  ACTATTN_CPU_ISA=$isa .venv/bin/python -m pytest tests/test_cpu_isa.py::test_the_default_is_the_best_build_this_cpu_runs \
    "${cpu_op_tests[@]}" -q -p no:cacheprovider
done
phase_took "the CPU op tests on the other ISA builds"

# The wheel a user would build, installed into a fresh venv and used from outside the tree.
bash tools/check_install.sh
phase_took "the wheel check"

torch_prefix=$(.venv/bin/python -c 'import torch; print(torch.utils.cmake_prefix_path)')
cmake -S . -B build/cmake -DCMAKE_PREFIX_PATH="$torch_prefix" >/dev/null
# The emulated tensor-core kernel tests need only CUDA's headers, which check_cuda.sh already required.
# Listed into a variable first: `ctest | grep -q` under pipefail fails whenever grep exits before ctest has
# written everything (SIGPIPE), which is how this check once failed in CI with the test configured.
configured_tests=$(ctest --test-dir build/cmake -N)
emulated_tests=(actattn_quadratic_emulation actattn_linear_emulation actattn_linear_generic_emulation
  actattn_quadratic_emulation_tsan actattn_linear_emulation_tsan actattn_linear_generic_emulation_tsan
  actattn_emulation_race_detector_shuffle)
for emulated in "${emulated_tests[@]}"; do
  if ! grep -q "$emulated" <<<"$configured_tests"; then
    echo "test.sh: the emulated tensor-core kernel test $emulated was not configured (CUDA headers not found)" >&2
    exit 1
  fi
done
# Here only the emulated kernel tests and the exp test: the library and its C++ test (actattn_cpp_test) are built and run
# by sanitize.sh under ASan + UBSan, which saves compiling the library a fourth time (CI's time).
cmake --build build/cmake -j "$(nproc)" --target actattn_emulation_tests actattn_exp_test
ctest --test-dir build/cmake --output-on-failure -j "$(nproc)" -R 'emulation|exp_test'
phase_took "the emulated kernels"

# The C++ test of the library, and the op, fuzz and kernel tests again, against an ASan + UBSan build.
bash tools/sanitize.sh
phase_took "the sanitizer run"

cuda_check_status=0
wait "$cuda_check" || cuda_check_status=$?
echo "test.sh: the CUDA build check (background) ran $((SECONDS - cuda_check_start)) s from the start"
phase_took "waiting for the CUDA build check"
if [ "$cuda_check_status" -eq 2 ]; then
  # Kernels spilled in the background build: their sources are compiled again now, without ccache,
  # and that compilation decides (check_cuda_build.sh's header says why).
  cat build/cuda-registers.txt
  bash tools/check_cuda_build.sh --recheck-spills || {
    echo "test.sh: the CUDA build check FAILED: kernels spill in the second compilation too" >&2
    exit 1
  }
  phase_took "compiling the spilling kernels' sources again"
elif [ "$cuda_check_status" -ne 0 ]; then
  tail -n 60 "$cuda_check_log" >&2
  echo "test.sh: the CUDA build check FAILED (log: $cuda_check_log)" >&2
  exit 1
else
  tail -n 1 "$cuda_check_log"
fi
# Registers and spills of every kernel instantiation (the summary; the full table is build/cuda-registers.md).
cat build/cuda-registers.txt
