#!/usr/bin/env bash
# Creates .venv-cuda: torch's CUDA build (2.14.1, cu130, about 5.5 GB with its NVIDIA libraries), which
# tools/check_cuda_build.sh builds the extension against. Idempotent. Exits 3, installing nothing, when
# the disk has under 12 GB free (check_cuda_build.sh then only compiles the CUDA sources).
set -euo pipefail
cd "$(dirname "$0")/.."

free_gb=$(df -Pk . | awk 'NR == 2 { print int($4 / 1048576) }')
if [ "$free_gb" -lt 12 ]; then
  echo "cuda_venv.sh: ${free_gb} GB free, the CUDA build of torch needs 12" >&2
  exit 3
fi
[ -x .venv-cuda/bin/python ] || python3 -m venv .venv-cuda
# pip's warnings about index locations this machine's pip configuration names but lacks are dropped.
# --no-compile: no bytecode for torch's 6000 Python files (about 20 CPU-seconds), of which the check
# imports a few once.
.venv-cuda/bin/python -m pip install -q --no-compile torch==2.14.1 numpy "setuptools>=77" ninja 2>&1 \
  | { grep -v '^WARNING: Location' || true; }
