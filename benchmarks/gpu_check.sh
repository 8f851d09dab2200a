#!/usr/bin/env bash
# The GPU check, for a machine with one NVIDIA GPU and a CUDA build of torch already installed (no
# network needed). In about 8 minutes on one H200 it
#   1. builds actattn with its CUDA kernels in place (for this GPU's architecture),
#   2. runs every CUDA case of the test suite (kernels vs the float64 reference, the low-precision error
#      rule, gradcheck in float64, opcheck, torch.compile),
#   3. runs compute-sanitizer memcheck over a small subset, with torch's caching allocator off,
#   4. runs the GPU benchmark (bf16, B=4, H=16) against SDPA and the torch composites.
# Logs go to $OUT (default build/gpu-check). Usage: bash benchmarks/gpu_check.sh
set -uo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
OUT=${OUT:-build/gpu-check}
mkdir -p "$OUT"
export PYTHONPATH=$PWD/python${PYTHONPATH:+:$PYTHONPATH}
status=0
step() { echo; echo "== $* ($(date +%T))"; }

step "environment"
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader
$PY -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda, torch.cuda.get_device_name())"

step "build (CUDA)"
# torch guesses CUDA_HOME from nvcc's location, wrong when nvcc is a wrapper script; nvcc knows its root.
if [ -z "${CUDA_HOME:-}" ] && command -v nvcc >/dev/null; then
  export CUDA_HOME=$(realpath "$(nvcc -v -E -x cu /dev/null 2>&1 | sed -n 's/^#\$ TOP=//p' | head -n 1)")
fi
if ! ACTATTN_CUDA=1 MAX_JOBS=${MAX_JOBS:-16} timeout 300 $PY setup.py build_ext --inplace >"$OUT/build.log" 2>&1; then
  tail -n 60 "$OUT/build.log"
  echo "gpu_check: build FAILED"
  exit 1
fi
grep -E "warning" "$OUT/build.log" | grep -v "torch/include" | head -n 20

step "CUDA tests"
timeout 240 $PY -m pytest tests -q -k cuda -p no:cacheprovider -x --maxfail=5 2>&1 | tee "$OUT/pytest.log" | tail -n 40
[ "${PIPESTATUS[0]}" -eq 0 ] || status=1

step "compute-sanitizer memcheck (subset: generic and tensor-core kernels)"
PYTORCH_NO_CUDA_MEMORY_CACHING=1 timeout 240 compute-sanitizer --tool memcheck --error-exitcode 9 \
  $PY -m pytest -q -p no:cacheprovider -x \
  "tests/test_attention.py::test_matches_reference_float64" "tests/test_linear_attention.py::test_causal_matches_reference_float64" \
  "tests/test_linear_attention.py::test_non_causal_matches_reference_float64" \
  "tests/test_attention.py::test_tensor_core_shapes_within_twice_composite" \
  "tests/test_linear_attention.py::test_tensor_core_shapes_within_twice_composite" \
  "tests/test_key_lengths.py::test_linear_padded_equals_unpadded_on_tensor_core_shapes" \
  -k "cuda and (1x1x65x65x256x256 or 1x2x63x130x16x32 or 2x2x2x2x3x3 or (d64-padded and bf16 and softmax) or (d128 and fp16 and relu and causal) or bnhd-elu-causal-bf16 or (on_tensor_core_shapes and causal))" \
  2>&1 | tee "$OUT/memcheck.log" | tail -n 15
[ "${PIPESTATUS[0]}" -eq 0 ] || status=1

step "benchmark"
# bf16, B=4, H=16 (the issue's anchors); tensor cores at D = 64 and 128 for every op. The materialising
# composites (sigmoid, relu baselines) run at 4096 only. flash-linear-attention joins when it imports
# (carry its wheels: README); 4800 GB/s is the H200's memory bandwidth, for the linear floor.
bench() { $PY benchmarks/bench.py --device cuda --dtype bfloat16 --batch 4 --heads 16 --repeats 10 --fla --peak-gbs 4800 "$@"; }
timeout 120 bench --head-dim 64 --seq-lens 4096 2>&1 | tee "$OUT/bench.md"
timeout 120 bench --head-dim 64 --seq-lens 16384 --cases "softmax causal" linear 2>&1 | grep "^| [a-z]" | tee -a "$OUT/bench.md"
timeout 120 bench --head-dim 128 --seq-lens 16384 --cases "softmax" "linear relu causal" 2>&1 | grep "^| [a-z]" | tee -a "$OUT/bench.md"

step "done: $([ $status -eq 0 ] && echo PASSED || echo FAILED)"
exit $status
