#!/usr/bin/env bash
# Builds and links the whole extension with its CUDA kernels, as a GPU machine would, against torch's
# CUDA build (2.14.1, cu130, in its own venv .venv-cuda: tools/cuda_venv.sh), then imports it here
# without a GPU and checks that every underscored op has its CUDA kernel registered. Catches what
# compiling alone (check_cuda.sh) cannot: link errors, undefined symbols, registration.
#
# CUDA_CHECK_ARCHS (TORCH_CUDA_ARCH_LIST's format) picks the architectures; the default, 9.0, is the
# H200's, on which the GPU goals are measured. CI compiles that one alone: a second architecture nearly
# doubles the kernels' compile time (quadratic_forward_tc.cu: 98 CPU-seconds for sm_90, 188 for sm_80 and
# sm_90; the whole check took 2026 CPU-seconds of CI's 4633 for both, 2026-12-01), and ptxas's registers
# differ between the two (498 of 717 kernels, by up to 46), so after changing a kernel run
# `CUDA_CHECK_ARCHS="8.0;9.0" bash tools/check_cuda_build.sh` for A100's (and sm_86/89's) registers too.
#
# Fails (exit 2) when a kernel spills, naming the sources in build/cuda-spilled-sources.txt.
# `--recheck-spills` then compiles those sources again, alone and without ccache, and judges on that
# compilation: where a kernel's registers sit at an occupancy step (64, 72, 80, 96, 128 at 128
# threads), ptxas may spill a few bytes to stay on it, and whether it does can differ between two
# compilations of one source, since cicc's PTX differs with the source's path and with ccache (README,
# the CUDA check). A spill that the second compilation repeats fails the check.
set -euo pipefail
cd "$(dirname "$0")/.."

status=0
bash tools/cuda_venv.sh || status=$?
if [ "$status" -eq 3 ]; then
  echo "check_cuda_build.sh: compiling only (check_cuda.sh)" >&2
  exec bash tools/check_cuda.sh
fi
[ "$status" -eq 0 ] || exit "$status"

source tools/cuda_home.sh
archs=${CUDA_CHECK_ARCHS:-9.0}

out=build/cuda-link
spilled=build/cuda-spilled-sources.txt
# NVCC_APPEND_FLAGS (read by nvcc itself): ptxas reports each kernel's registers and spills into the
# log, which tools/ptxas_report.py turns into build/cuda-registers.md and a summary.
# ACTATTN_CPU_ISAS empty: the CPU kernels' baseline build alone, since this check is about the CUDA side and
# the extra ISA builds (which bootstrap and the wheel check compile) would add minutes to CI's slowest step.
build() {  # build LOG [env...]: the extension into $out, incrementally
  local log=$1
  shift
  env "$@" NVCC_APPEND_FLAGS="-Xptxas -v" ACTATTN_CPU_ISAS="" ACTATTN_CUDA=1 TORCH_CUDA_ARCH_LIST="$archs" \
    .venv-cuda/bin/python setup.py build_ext -b "$out/lib" -t "$out/temp" >"$log" 2>&1 || {
    tail -n 40 "$log"
    echo "check_cuda_build.sh: CUDA build FAILED (log: $log)" >&2
    exit 1
  }
}
report() {  # report LOG...: the register table and summary; exit status 2 when a kernel spills
  .venv-cuda/bin/python tools/ptxas_report.py "$@" --table build/cuda-registers.md --fail-on-spill \
    --spilled-sources "$spilled" | tee build/cuda-registers.txt
}

if [ "${1:-}" = "--recheck-spills" ]; then
  [ -s "$spilled" ] || { echo "check_cuda_build.sh: no spilled sources to recheck ($spilled)" >&2; exit 1; }
  mapfile -t sources <"$spilled"
  echo "check_cuda_build.sh: compiling again, alone and without ccache: ${sources[*]}"
  for source in "${sources[@]}"; do
    relative=$(realpath --relative-to=. "$source")
    rm -f "$out/temp/${relative%.cu}.o"  # where setup.py puts the object of kernels/cuda/x.cu
  done
  build "$out-recheck.log" MAX_JOBS=1 CCACHE_DISABLE=1
  report "$out.log" "$out-recheck.log"
  exit 0
fi

mkdir -p build
rm -rf "$out/pkg" "$spilled"
build "$out.log" MAX_JOBS="${MAX_JOBS:-$(nproc)}"
spill_status=0
if grep -q "Compiling entry function" "$out.log"; then
  report "$out.log" || spill_status=$?
  [ "$spill_status" -eq 0 ] || [ "$spill_status" -eq 2 ] || exit "$spill_status"
else  # an incremental build that recompiled no kernel (CI's clean clone always compiles them all)
  echo "ptxas report: no CUDA kernel was recompiled; build/cuda-registers.md (if there) is from an earlier build" |
    tee build/cuda-registers.txt
fi
mkdir -p "$out/pkg"
cp -r python/actattn "$out/pkg/"
rm -rf "$out"/pkg/actattn/_C*.so "$out"/pkg/actattn/lib
# The CUDA build's library and the thin module that loads it (from lib/, next to it).
cp -r "$out"/lib/actattn/_C*.so "$out"/lib/actattn/lib "$out/pkg/actattn/"

PYTHONPATH=$out/pkg CUDA_CHECK_ARCHS=$archs .venv-cuda/bin/python - <<'PY'
import os

import torch

import actattn

assert "cuda-link" in actattn._ops._C.__file__, actattn._ops._C.__file__
assert torch.version.cuda is not None, "expected torch's CUDA build"
for op in ("_attention_forward", "_attention_backward", "_linear_attention_forward", "_linear_attention_backward"):
    table = torch._C._dispatch_dump(f"actattn::{op}")
    assert "CUDA: registered" in table, f"actattn::{op} has no CUDA kernel:\n{table}"
q = torch.randn(1, 2, 5, 64)
assert actattn.attention(q, q, q, causal=True).shape == q.shape  # the CUDA build still serves the CPU
archs = " + ".join("sm_" + arch.replace(".", "") for arch in os.environ["CUDA_CHECK_ARCHS"].split(";"))
print(f"check_cuda_build.sh: the CUDA build (torch {torch.__version__}, {archs}) links, imports and "
      "registers every op's CUDA kernel")
PY
if [ "$spill_status" -eq 2 ]; then
  echo "check_cuda_build.sh: kernels spill (above); \`bash tools/check_cuda_build.sh --recheck-spills\` compiles their sources again alone" >&2
  exit 2
fi
