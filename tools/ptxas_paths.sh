#!/usr/bin/env bash
# Compiles one CUDA source from copies of the tree at paths of different lengths, for sm_80 and sm_90, and
# reports each copy's registers and spills (tools/ptxas_report.py). cicc's PTX for a source varies with
# the source's path (and with ccache), so a kernel whose registers sit on an occupancy step can spill
# when built from one clone and not from another (README, the CUDA check): after changing kernels that
# sit near a step, run this before trusting one clean build.
#
#   bash tools/ptxas_paths.sh kernels/cuda/linear_backward_tc.cu [COPIES, default 4]
#
# Exits non-zero when any copy spills. About 2 minutes per copy and arch for linear_backward_tc.cu, two
# compilations at a time on 2 cores.
set -euo pipefail
cd "$(dirname "$0")/.."
source=${1:?usage: tools/ptxas_paths.sh SOURCE.cu [COPIES]}
copies=${2:-4}
[ -f "$source" ] || { echo "ptxas_paths.sh: no such source: $source" >&2; exit 1; }
NVCC=${NVCC:-$(command -v nvcc || true)}
[ -n "$NVCC" ] || { echo "ptxas_paths.sh: nvcc not found (set NVCC=/path/to/nvcc)" >&2; exit 1; }
source tools/nvcc_flags.sh
NVCC_FLAGS="${nvcc_build_flags[*]}"  # for the sh below (no flag holds a space)
export NVCC NVCC_FLAGS source

work=$(mktemp -d /tmp/actattn-ptxas-paths.XXXXXX)
trap 'rm -rf "$work"' EXIT
for copy in $(seq 1 "$copies"); do
  tree=$work/$(printf 'p%.0s' $(seq 1 "$copy"))  # each copy's path one character longer
  mkdir -p "$tree/python/actattn"
  cp -r kernels "$tree/"
  cp -r python/actattn/include "$tree/python/actattn/"
  for arch in 80 90; do echo "$tree" "$arch"; done
done | xargs -P "$(nproc)" -n 2 sh -c '
  cd "$0" && "$NVCC" $NVCC_FLAGS -I python/actattn/include -cubin -arch=sm_$1 -Xptxas -v "$source" -o /dev/null \
    >"sm_$1.log" 2>&1'

status=0
for tree in "$work"/p*; do
  echo "ptxas_paths.sh: compiled from $tree ($(printf '%s' "$tree" | wc -c) characters)"
  .venv/bin/python tools/ptxas_report.py "$tree"/sm_80.log "$tree"/sm_90.log --fail-on-spill || status=1
done
exit "$status"
