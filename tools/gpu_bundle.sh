#!/usr/bin/env bash
# Builds the CUDA extension here, without a GPU, for a lent GPU machine whose Python and torch differ from
# this one's, so that benchmarks/gpu_check.sh can skip its build (about 210 s of a 15-minute device budget
# on an H200 with 16 cores). The bundle, build/gpu-bundle/actattn/ (the thin module _C and lib/libactattn.so,
# stripped of debug info so that it travels within the 64-MiB working tree), is what
# GPU_CHECK_PREBUILT=<that folder> tells gpu_check.sh to copy into python/actattn/ instead of building.
#   GPU_PYTHON   a Python of the GPU machine's minor version (default: python3.12; the H200 has 3.12)
#   GPU_TORCH    the GPU machine's torch release (default: 2.11.0, whose PyPI wheel is the cu130 build)
#   GPU_ARCH     TORCH_CUDA_ARCH_LIST for that GPU (default: 9.0, the H200)
# torch's wheel and its CUDA libraries (about 4.7 GB, which importing torch needs) go into a venv under
# build/gpu-bundle/; the build compiles every kernel for one architecture (about 4 minutes on 2 cores).
# Usage: bash tools/gpu_bundle.sh, then carry build/gpu-bundle in the device call.
set -euo pipefail
cd "$(dirname "$0")/.."
python=${GPU_PYTHON:-python3.12}
torch_release=${GPU_TORCH:-2.11.0}
arch=${GPU_ARCH:-9.0}
out=build/gpu-bundle
command -v "$python" >/dev/null || { echo "gpu_bundle.sh: $python not found (set GPU_PYTHON)" >&2; exit 1; }

[ -x "$out/venv/bin/python" ] || "$python" -m venv "$out/venv"
# setuptools below 82: torch 2.11's requirement. Index warnings of this machine's pip configuration dropped.
"$out/venv/bin/python" -m pip install -q "torch==$torch_release" "setuptools<82" ninja numpy 2>&1 |
  { grep -v '^WARNING: Location' || true; }

# A copy of the tracked sources (a build in place would leave the bundle's _C beside this machine's).
rm -rf "$out/src" "$out/actattn"
mkdir -p "$out/src"
git ls-files -z | xargs -0 cp --parents -t "$out/src"
source tools/cuda_home.sh
(cd "$out/src" && ACTATTN_CUDA=1 ACTATTN_CPU_ISAS="" MAX_JOBS=${MAX_JOBS:-$(nproc)} TORCH_CUDA_ARCH_LIST="$arch" \
  ../venv/bin/python setup.py build_ext --inplace >../build.log 2>&1) || {
  tail -n 30 "$out/build.log"
  echo "gpu_bundle.sh: build FAILED (log: $out/build.log)" >&2
  exit 1
}
mkdir -p "$out/actattn/lib"
cp "$out"/src/python/actattn/_C*.so "$out/actattn/"
strip --strip-debug -o "$out/actattn/lib/libactattn.so" "$out/src/python/actattn/lib/libactattn.so"
rm -rf "$out/src"
echo "gpu_bundle.sh: $(du -sh "$out/actattn" | cut -f1) in $out/actattn (torch $torch_release, $python, sm ${arch});" \
  "run the check with GPU_CHECK_PREBUILT=$out/actattn, carrying $out/actattn"
