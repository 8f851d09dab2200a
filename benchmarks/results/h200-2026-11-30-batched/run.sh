#!/usr/bin/env bash
# Prebuilt (here: torch 2.11.0+cu130, cp312, sm_90) quick GPU check: tests, linear bench, kernel times.
set -uo pipefail
cp -r .gpubin/actattn/* python/actattn/
export PYTHONPATH=$PWD/python PYTHONUNBUFFERED=1
python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .whl/*.whl && export PYTHONPATH=$PYTHONPATH:/tmp/site
python3 -c "import actattn, torch; print(actattn._ops._C.__file__, torch.__version__)" 2>&1 | tail -2
echo "== tests $SECONDS"
timeout 60 python3 -m pytest tests -q --tb=line -k cuda -p no:cacheprovider -n 8 --maxfail=30 > $OUT/pytest.log 2>&1
grep -E "FAILED|ERROR|passed|failed" $OUT/pytest.log | tail -25
echo "== bench $SECONDS"
b=(python3 benchmarks/bench.py --device cuda --dtype bfloat16 --batch 4 --heads 16 --repeats 10 --fla --peak-gbs 4800)
timeout 30 "${b[@]}" --head-dim 64 --seq-lens 4096 16384 --cases "linear relu causal" "linear elu" 2>&1 | grep "^| [a-z]" | tee $OUT/bench.md
timeout 20 "${b[@]}" --head-dim 128 --seq-lens 16384 --cases "linear relu causal" 2>&1 | grep "^| [a-z]" | tee -a $OUT/bench.md
echo "== kernel times $SECONDS"
timeout 45 python3 benchmarks/kernel_times.py --device cuda --dtype bfloat16 --batch 4 --heads 16 --rows 8 --cases "linear relu causal 64 16384" "linear relu causal 128 16384" "softmax 128 4096" 2>&1 | grep -v "^USDT" | tee $OUT/kernel_times.md
echo "== done $SECONDS"
