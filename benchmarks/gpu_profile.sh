#!/usr/bin/env bash
# Nsight Compute counters of actattn's tensor-core kernels (one GPU; after benchmarks/gpu_check.sh has
# built the extension in place): bf16, B=4, H=16, N=4096, D=64; softmax fwd+bwd, causal softmax fwd+bwd,
# causal linear (relu) fwd+bwd. Sections: speed of light, occupancy, launch, warp states, memory and
# compute workload, source counters. Clocks are left alone (--clock-control none), as the workplace's
# METHOD.md asks. Writes $OUT/ncu.txt (default build/gpu-check). Usage: bash benchmarks/gpu_profile.sh
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-build/gpu-check}
mkdir -p "$OUT"
export PYTHONPATH=$PWD/python${PYTHONPATH:+:$PYTHONPATH}
program=$(mktemp --suffix .py)
cat >"$program" <<'PY'
import torch, actattn
q, k, v = (torch.randn(4, 16, 4096, 64, device="cuda", dtype=torch.bfloat16, requires_grad=True) for _ in range(3))
for call in (lambda: actattn.attention(q, k, v), lambda: actattn.attention(q, k, v, causal=True),
             lambda: actattn.linear_attention(q, k, v, feature_map="relu", causal=True)):
    out = call()
    out.backward(torch.ones_like(out))
torch.cuda.synchronize()
PY
ncu --clock-control none --kernel-name regex:'forward_kernel|backward_kernel|delta_kernel|key_grads|query_grads' \
  --launch-count 20 --section SpeedOfLight --section Occupancy --section LaunchStats --section WarpStateStats \
  --section MemoryWorkloadAnalysis --section ComputeWorkloadAnalysis --section SourceCounters \
  python3 "$program" >"$OUT/ncu.txt" 2>&1
grep -E "^  void|Duration|Registers Per|Achieved Occupancy|Issue Slots Busy|stalled waiting" "$OUT/ncu.txt"
