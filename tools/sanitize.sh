#!/usr/bin/env bash
# Runs the C++ tests and a representative part of the Python suite against an AddressSanitizer +
# UndefinedBehaviorSanitizer build of the CPU library; any report fails the run. One CMake build at -O1
# (ASan's usual choice: quick to compile, still fast enough to run) with -DACTATTN_SANITIZE=ON serves both:
#   C++:    the library's C++ test, CTest; then the library installed and used by the downstream example
#           project (tools/check_cpp_package.sh).
#   Python: the package's _C module over the same library (-DACTATTN_PYTHON_MODULE=ON), copied with the
#           package into build/sanitize/lib, loaded first on PYTHONPATH, libasan preloaded into the
#           (uninstrumented) interpreter.
# Expects tools/bootstrap.sh to have run.
set -euo pipefail
cd "$(dirname "$0")/.."
jobs=$(nproc)
export ASAN_OPTIONS="detect_leaks=0:abort_on_error=1:print_summary=1"
export UBSAN_OPTIONS="print_stacktrace=1:halt_on_error=1"

torch_prefix=$(.venv/bin/python -c 'import torch; print(torch.utils.cmake_prefix_path)')
# The CPU kernels once, as the build this CPU runs by default, the one the tests below exercise: the
# baseline build compiled with that build's flags (kernels/cpu/isa_builds.txt), so that its code is the
# vector ISA's (tile_gemm.h's AVX2 or AVX-512 blocks). Building the ISA build beside the baseline, as the
# library does, compiled the kernels twice, the second time for a baseline copy these tests never run
# (the kernels: 220 CPU-seconds, against 120 once; the whole build 465 against 383, 2026-12-02).
# tools/test.sh runs the op tests on each build this CPU runs.
best_isa=$(.venv/bin/python -c 'import actattn; print(actattn.cpu_isa())')
best_isa_flags=$(awk -v isa="$best_isa" '$1 == isa { $1 = ""; print }' kernels/cpu/isa_builds.txt)
# The emulated tensor-core tests are left out here (their build and run take as long as the rest of
# this script); they run unsanitized in test.sh.
cmake -S . -B build/sanitize/cmake -DCMAKE_PREFIX_PATH="$torch_prefix" -DACTATTN_SANITIZE=ON \
  -DACTATTN_CPU_ISAS="" -DCMAKE_CXX_FLAGS="$best_isa_flags" -DACTATTN_PYTHON_MODULE=ON -DPython_EXECUTABLE="$PWD/.venv/bin/python" >/dev/null
cmake --build build/sanitize/cmake -j "$jobs" --target actattn_cpp_test actattn_python_module
ctest --test-dir build/sanitize/cmake --output-on-failure -R '^actattn_cpp_test$'
# The installed C++ package and the downstream example project, against the same sanitized library.
bash tools/check_cpp_package.sh build/sanitize/cmake

# The package's Python files next to the sanitized _C, which finds the library through its RPATH (the
# in-place _C of the editable install is skipped).
lib=build/sanitize/lib
rm -rf "$lib" && mkdir -p "$lib"
(cd python && find actattn -name '*.py' -exec cp --parents {} "../$lib/" \;)
cp build/sanitize/cmake/_C*.so "$lib/actattn/"

# libstdc++ is preloaded with libasan: python itself does not link it, and ASan's __cxa_throw
# interceptor must find the real one when the interpreter starts, or the first C++ exception aborts.
export LD_PRELOAD="$(gcc -print-file-name=libasan.so):$(gcc -print-file-name=libstdc++.so)"
PYTHONPATH="$lib" .venv/bin/python - <<'PY'
import actattn, actattn._C as c
assert "build/sanitize" in c.__file__, f"the sanitized extension was not the one loaded: {c.__file__}"
print("sanitize: loaded", c.__file__)
PY
# torch.compile tests are left out (-k): they run the same kernels as the eager tests here, and under the
# preloaded ASan their inductor builds took most of the minutes the Python part grew by in CI. So are the
# four long-sequence precision tests (N = 65536 float16 states, error growth to N = 16384): what they
# check is numerics, which the unsanitized pytest run checks; the kernels' loops and indexing they run are
# the shorter tests' (under ASan they took 65 of the run's 150 s, 2026-12-01).
PYTHONPATH="$lib" .venv/bin/python -m pytest -q -p no:cacheprovider \
  -k "not compile and not past_float16_range and not does_not_grow_to_16k" \
  tests/test_op_arguments.py tests/test_errors.py tests/test_fuzz.py tests/test_nonfinite.py \
  tests/test_attention.py tests/test_linear_attention.py tests/test_key_lengths.py tests/test_precision.py \
  tests/test_decoding.py tests/test_dropout.py tests/test_window.py
unset LD_PRELOAD
echo "sanitize: no ASan or UBSan report"
