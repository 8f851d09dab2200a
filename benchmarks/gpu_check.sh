#!/usr/bin/env bash
# The GPU check, for a machine with one NVIDIA GPU and a CUDA build of torch already installed (no
# network needed). Within GPU_CHECK_SECONDS (default 575: a lent machine gives one 10-minute command) it
#   1. builds actattn with its CUDA kernels in place (for this GPU's architecture), or, with
#      GPU_CHECK_PREBUILT=<folder>, copies a build made elsewhere for this machine (tools/gpu_bundle.sh),
#   2. runs every CUDA case of the test suite (kernels vs the float64 reference, the low-precision error
#      rule, gradcheck in float64, opcheck, torch.compile), on 8 workers when pytest-xdist is there,
#   3. runs the GPU benchmark (bf16, B=4, H=16, D=64, N=4096) against SDPA and the torch composites,
#   4. runs compute-sanitizer memcheck over a small subset, with torch's caching allocator off, then
#      racecheck and synccheck on one tensor-core case per kernel,
#   5. runs the long-sequence benchmarks (N=16384, D=64 and 128), D=256 (softmax, linear) and
#      (Dk, Dv) = (192, 128) (N=4096) with what time is left,
#   6. and then lists each case's kernels by time (benchmarks/kernel_times.py: torch.profiler).
# Steps run in that order of importance, each capped by the time left, so that one slow step cannot
# take the results of the others with it. Logs go to $OUT (default build/gpu-check); carry
# flash-linear-attention as a wheel in .whl/ to have it timed too (README, GPU section).
# Usage: bash benchmarks/gpu_check.sh
set -uo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
OUT=${OUT:-build/gpu-check}
BUDGET=${GPU_CHECK_SECONDS:-575}
mkdir -p "$OUT"
export PYTHONPATH=$PWD/python${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1
status=0
step() { echo; echo "== $* ($(date +%T), ${SECONDS}s of ${BUDGET}s)"; }
# at_most N: N seconds, or what is left of the budget if less (0 when it is spent).
at_most() { local left=$((BUDGET - SECONDS)); [ "$left" -lt "$1" ] && echo $((left > 0 ? left : 0)) || echo "$1"; }
# run_for N CMD...: CMD under timeout, skipped when under 15 s are left.
run_for() {
  local limit; limit=$(at_most "$1"); shift
  if [ "$limit" -lt 15 ]; then echo "(skipped: the time budget is spent)"; return 124; fi
  timeout "$limit" "$@"
}

step "environment"
nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv,noheader
$PY -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda, torch.cuda.get_device_name())"
if [ -d .whl ] && ls .whl/*.whl >/dev/null 2>&1; then
  $PY -m pip install -q --no-index --no-deps --no-compile --target /tmp/gpu-check-site .whl/*.whl \
    && export PYTHONPATH=$PYTHONPATH:/tmp/gpu-check-site
fi
workers=()
$PY -c "import xdist" 2>/dev/null && workers=(-n 8)

step "build (CUDA)"
source tools/cuda_home.sh
export ACTATTN_CUDA=1 MAX_JOBS=${MAX_JOBS:-16}
if [ -n "${GPU_CHECK_PREBUILT:-}" ]; then  # built elsewhere for this machine (tools/gpu_bundle.sh)
  cp -r "$GPU_CHECK_PREBUILT"/. python/actattn/ && echo "prebuilt: $(ls python/actattn/_C*.so)"
elif ! run_for 330 $PY setup.py build_ext --inplace >"$OUT/build.log" 2>&1; then
  tail -n 60 "$OUT/build.log"
  echo "gpu_check: build FAILED"
  exit 1
fi
[ -f "$OUT/build.log" ] && grep -E "warning" "$OUT/build.log" | grep -v "torch/include" | head -n 20

step "CUDA tests"
# -v: one line per test as it ends, so a run cut short by its limit still says what passed and failed.
run_for 200 $PY -m pytest tests -v --tb=short -k cuda -p no:cacheprovider "${workers[@]}" --maxfail=40 \
  >"$OUT/pytest.log" 2>&1
[ $? -eq 0 ] || status=1
grep -E "FAILED|ERROR" "$OUT/pytest.log" | head -n 60
tail -n 3 "$OUT/pytest.log"

# bf16, B=4, H=16 (the issue's anchors); tensor cores at D = 64 and 128 for every op. The materialising
# composites (sigmoid, relu baselines) run at 4096 only. 4800 GB/s is the H200's memory bandwidth, for
# the linear floor.
bench=($PY benchmarks/bench.py --device cuda --dtype bfloat16 --batch 4 --heads 16 --repeats 10 --fla --peak-gbs 4800)
step "benchmark, N=4096"
run_for 100 "${bench[@]}" --head-dim 64 --seq-lens 4096 2>&1 | tee "$OUT/bench.md"

step "compute-sanitizer memcheck (subset: generic and tensor-core kernels)"
PYTORCH_NO_CUDA_MEMORY_CACHING=1 run_for 150 compute-sanitizer --tool memcheck --error-exitcode 9 \
  $PY -m pytest -q -p no:cacheprovider -x \
  "tests/test_attention.py::test_matches_reference_float64" "tests/test_linear_attention.py::test_causal_matches_reference_float64" \
  "tests/test_linear_attention.py::test_non_causal_matches_reference_float64" \
  "tests/test_attention.py::test_tensor_core_shapes_within_twice_composite" \
  "tests/test_linear_attention.py::test_tensor_core_shapes_within_twice_composite" \
  "tests/test_key_lengths.py::test_linear_padded_equals_unpadded_on_tensor_core_shapes" \
  -k "cuda and (1x1x65x65x256x256 or 1x2x63x130x16x32 or 2x2x2x2x3x3 or (d64-padded and bf16 and softmax) or (d128 and fp16 and relu and causal) or d256-elu-causal-fp16 or bnhd-elu-causal-bf16 or (on_tensor_core_shapes and causal))" \
  >"$OUT/memcheck.log" 2>&1
[ $? -eq 0 ] || status=1
tail -n 15 "$OUT/memcheck.log"

# Shared-memory races (racecheck) and barrier misuse (synccheck) in the kernels that share tiles between
# warps: one case per kernel family (quadratic forward and its three backward kernels, causal, at D = 64
# and at D = 128, whose dK/dV warps exchange P^T through shared memory; D = 256, whose forward and dQ
# kernels read Q from shared memory and whose dK/dV block is four column groups of one row group;
# (Dk, Dv) = (192, 128), whose tiles have rows of two widths; the linear backward's compact layouts of
# sm_86/89, forced; linear forward and backward on
# tensor cores, causal and not; linear attention at D = 256 in float16, whose forward's state loader reads
# the state in two batches and whose backward runs in value groups; the generic linear backward's two
# kernels, float64).
step "compute-sanitizer racecheck and synccheck (one case per kernel)"
for tool in racecheck synccheck; do
  PYTORCH_NO_CUDA_MEMORY_CACHING=1 run_for 80 compute-sanitizer --tool "$tool" --error-exitcode 9 \
    $PY -m pytest -q -p no:cacheprovider -x tests/test_attention.py tests/test_linear_attention.py \
    -k "cuda and ((tensor_core_shapes and (d64-padded-softmax-causal-bf16 or d128-nq-over-nk-softmax-causal-bf16 or d256-padded-nq-over-nk-softmax-causal-bf16 or d192-128-bnhd-padded-softmax-causal-bf16 or d64-bnhd-elu-causal-bf16 or d64-bnhd-elu-full-bf16 or d256-elu-causal-fp16)) or (compact_tile_layouts and causal) or (test_causal_matches_reference_float64 and cuda-elu-norm-1x2x63x63x16x16))" \
    >"$OUT/$tool.log" 2>&1
  [ $? -eq 0 ] || status=1
  tail -n 5 "$OUT/$tool.log"
done

step "benchmark, N=16384"
run_for 60 "${bench[@]}" --head-dim 64 --seq-lens 16384 --cases "softmax causal" linear 2>&1 | grep "^| [a-z]" | tee -a "$OUT/bench.md"
run_for 60 "${bench[@]}" --head-dim 128 --seq-lens 16384 --cases "softmax" "linear relu causal" 2>&1 | grep "^| [a-z]" | tee -a "$OUT/bench.md"
# D = 256: forward and backward on the tensor cores (the backward's dK/dV blocks: 16 keys, 4 warps).
run_for 40 "${bench[@]}" --head-dim 256 --seq-lens 4096 --cases "softmax" 2>&1 | grep "^| [a-z]" | tee -a "$OUT/bench.md"
# Linear attention at D = 256: the forward on tensor cores (B and V over the state tile), the backward in
# four value groups of 64 columns, fla's chunk kernels beside it.
run_for 40 "${bench[@]}" --head-dim 256 --seq-lens 4096 --cases "linear relu causal" 2>&1 | grep "^| [a-z]" \
  | tee -a "$OUT/bench.md"
# (Dk, Dv) = (192, 128), multi-head latent attention's (SDPA takes its memory-efficient kernel there).
run_for 40 "${bench[@]}" --head-dim 192 --value-head-dim 128 --seq-lens 4096 --cases "softmax causal" 2>&1 \
  | grep "^| [a-z]" | tee -a "$OUT/bench.md"

step "kernel times (one fwd+bwd per case)"
run_for 60 $PY benchmarks/kernel_times.py --device cuda --dtype bfloat16 --batch 4 --heads 16 2>&1 \
  | grep -v "^USDT" | tee "$OUT/kernel_times.md"

step "done: $([ $status -eq 0 ] && echo PASSED || echo FAILED)"
exit $status
