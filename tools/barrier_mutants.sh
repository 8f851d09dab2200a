#!/usr/bin/env bash
# How well the warp emulation (tests/emulation/) catches a missing barrier: deletes each __syncthreads()
# of the tensor-core kernels in turn, in a copy of the tree, builds the plain emulation test of that
# kernel's kind and counts the cases that fail, under each of the emulation's schedules and overall
# (kernels/cuda/warp_emulation.h's Schedule). A deletion that fails no case is a barrier the emulation
# cannot check. About 25 minutes on 2 cores (20 barriers; two builds and runs at a time).
# With --tsan it builds the ThreadSanitizer test instead (which holds the few cases CTest runs under
# TSan, the test file's tsan_cases()) and runs each of its cases alone, counting those in which TSan
# reports a race: whether those few cases cover every barrier.
#
#   bash tools/barrier_mutants.sh [--tsan] [OUT_DIR, default build/barrier-mutants] [KERNEL_HEADER...]
# (the headers whose barriers to delete; default every tensor-core kernel header)
set -euo pipefail
cd "$(dirname "$0")/.."
tsan=0
if [ "${1:-}" = --tsan ]; then
  tsan=1
  shift
fi
out=$(realpath -m "${1:-build/barrier-mutants}")
rm -rf "$out" && mkdir -p "$out"
export out tsan
shift || true
sources=("$@")
[ ${#sources[@]} -gt 0 ] || sources=(kernels/cuda/*_tc.cuh kernels/cuda/linear_tc_common.cuh)
for source in "${sources[@]}"; do
  kind=linear
  case $source in *quadratic*) kind=quadratic ;; esac
  for line in $(grep -n "__syncthreads();" "$source" | cut -d: -f1); do echo "$source $line $kind"; done
done | xargs -P "$(nproc)" -L 1 sh -c '
  source=$0 line=$1 kind=$2
  copy=$out/$(basename "$source")_$line
  mkdir -p "$copy" && cp -r kernels tests "$copy/"
  sed -i "${line}s/__syncthreads();/(void)0;/" "$copy/$source"
  code=$(sed -n "${line}p" "$source" | sed "s/^ *//")
  if [ "$tsan" = 1 ]; then
    g++ -std=c++20 -O1 -g1 -fsanitize=thread -I/usr/local/cuda/include "$copy/tests/emulation/${kind}_kernels.cpp" -o "$copy/test"
    cases=0 reported=0
    "$copy/test" --list >"$copy/cases.txt"
    while read -r name; do
      cases=$((cases + 1))
      "$copy/test" "$name" >"$copy/run-$cases.log" 2>&1 || true
      ! grep -q "WARNING: ThreadSanitizer" "$copy/run-$cases.log" || reported=$((reported + 1))
    done <"$copy/cases.txt"
    printf "%s:%s  TSan reports a race in %s of %s cases  | %s\n" "$source" "$line" "$reported" "$cases" "$code" \
      >"$copy/summary"
  else
    g++ -std=c++20 -O2 -I/usr/local/cuda/include "$copy/tests/emulation/${kind}_kernels.cpp" -o "$copy/test"
    "$copy/test" >"$copy/run.log" 2>&1 || true
    printf "%s:%s  taking turns: %s failed, warp by warp: %s, overall: %s  | %s\n" "$source" "$line" \
      "$(grep -c "^turns *FAIL" "$copy/run.log")" "$(grep -c "^warp-by-warp FAIL" "$copy/run.log")" \
      "$(tail -n 1 "$copy/run.log")" "$code" >"$copy/summary"
  fi
  rm -rf "$copy/test" "$copy/kernels" "$copy/tests"'
cat "$out"/*/summary | sort
