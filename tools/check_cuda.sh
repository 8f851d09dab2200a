#!/usr/bin/env bash
# Compiles all CUDA code without a GPU and without linking, so a CUDA compile error never lands:
#  - every kernel in kernels/cuda/ with nvcc, for the architectures in CUDA_CHECK_ARCHS (default 9.0, as
#    in check_cuda_build.sh, which says why), with the flags of torch's extension build (tools/nvcc_flags.sh);
#  - the torch glue of the CUDA backend (csrc/cuda/) against the headers of torch's CUDA build (2.14.1,
#    cu130, unpacked from its wheel: the CPU build lacks c10/cuda's generated headers).
set -euo pipefail
cd "$(dirname "$0")/.."

NVCC=${NVCC:-$(command -v nvcc || true)}
if [ -z "$NVCC" ]; then
  echo "check_cuda.sh: nvcc not found (set NVCC=/path/to/nvcc)" >&2
  exit 1
fi
# Ask nvcc where its headers are (it may be a wrapper script outside the toolkit).
CUDA_INCLUDE=$("$NVCC" -v -E -x cu /dev/null 2>&1 | sed -n 's/^#\$ INCLUDES="-I\([^"]*\)".*/\1/p' | head -n 1 | xargs)
out=build/cuda-check
mkdir -p "$out"

torch_headers=$out/torch-cuda-headers
if [ ! -f "$torch_headers/torch/include/c10/cuda/impl/cuda_cmake_macros.h" ]; then
  rm -rf "$out/wheel" "$torch_headers" && mkdir -p "$out/wheel" "$torch_headers"
  .venv/bin/python -m pip download -q --no-deps torch==2.14.1 -d "$out/wheel" 2>&1 | grep -v '^WARNING' || true
  .venv/bin/python - "$out"/wheel/torch-2.14.1-*.whl "$torch_headers" <<'PY'
import sys, zipfile
with zipfile.ZipFile(sys.argv[1]) as wheel:
    wheel.extractall(sys.argv[2], [name for name in wheel.namelist() if name.startswith("torch/include/")])
PY
  rm -rf "$out/wheel"
fi

source tools/nvcc_flags.sh
flags=("${nvcc_build_flags[@]}")
sms=()
IFS=';' read -ra archs <<<"${CUDA_CHECK_ARCHS:-9.0}"
for arch in "${archs[@]}"; do
  sm=${arch/./}
  flags+=(-gencode "arch=compute_$sm,code=sm_$sm")
  sms+=("sm_$sm")
done
pids=()
for source in kernels/cuda/*.cu; do
  name=$(basename "$source" .cu)
  # -Xptxas -v: each kernel's registers and spills, for tools/ptxas_report.py below.
  "$NVCC" "${flags[@]}" -Xptxas -v -c "$source" -o "$out/$name.o" >"$out/$name.ptxas.log" 2>&1 &
  pids+=($!)
done
TI=$torch_headers/torch/include
for source in csrc/cuda/*.cpp; do
  g++ -std=c++20 -fsyntax-only -Wall -I"$TI" -I"$TI/torch/csrc/api/include" -I"$CUDA_INCLUDE" "$source" &
  pids+=($!)
done
status=0
for pid in "${pids[@]}"; do wait "$pid" || status=1; done
# nvcc's own messages (warnings, errors): everything in the logs but ptxas's register lines.
grep -hv "^ptxas info\|bytes stack frame" "$out"/*.ptxas.log >&2 || true
if [ "$status" -ne 0 ]; then
  echo "check_cuda.sh: CUDA compile check FAILED" >&2
  exit 1
fi
.venv/bin/python tools/ptxas_report.py "$out"/*.ptxas.log --table build/cuda-registers.md --fail-on-spill |
    tee build/cuda-registers.txt
echo "check_cuda.sh: all CUDA sources compile (kernels for ${sms[*]}, glue against torch 2.14.1 cu130 headers)"
