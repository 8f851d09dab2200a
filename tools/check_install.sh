#!/usr/bin/env bash
# Installs actattn as a user would and uses it from outside the source tree:
# 1. builds a wheel with `python -m build --no-isolation` against .venv's torch, as the README's recommended
#    `pip install --no-build-isolation .` does (in place, so that ccache serves every compilation that
#    bootstrap's build made: an isolated build's torch headers lie at a random path, which ccache hashes,
#    so csrc/ compiled again; this check took 357 CPU-seconds in CI that way, 220 this way, 2026-12-01).
#    The isolated build (`pip install .`) is checked
#    up to its compiler: in an isolated environment of pyproject.toml's build requirements, with torch
#    pinned to .venv's through PIP_CONSTRAINT (an extension only loads into the torch it was built against,
#    and an unpinned isolated build would fetch the newest torch), pip prepares the package's metadata,
#    which runs setup.py;
# 2. installs the wheel into a fresh venv without extras: `import actattn` and an op's forward and backward
#    work, the trainer's dependencies are absent, and the trainer says which extra to install;
# 3. the wheel's C++ side: it holds libactattn.so, the public header and the CMake package, which
#    examples/cpp finds through actattn.cmake_prefix_path alone, builds and trains with;
# 4. adds the `compare` extra: the console script `actattn-compare` runs a tiny comparison.
# Needs tools/bootstrap.sh first (.venv with torch and `build`).
set -euo pipefail
cd "$(dirname "$0")/.."
work="$PWD/build/check-install"
rm -rf "$work"
mkdir -p "$work"
.venv/bin/python -c 'import torch; print(f"torch=={torch.__version__}")' >"$work/constraints.txt"
export PIP_CONSTRAINT="$work/constraints.txt"

echo "check_install: an isolated build environment ($(cat "$work/constraints.txt")) runs setup.py"
if ! .venv/bin/python -m pip install --dry-run --ignore-installed . >"$work/isolated.log" 2>&1; then
  tail -40 "$work/isolated.log" >&2
  echo "check_install: pyproject.toml's build requirements do not run setup.py (log: $work/isolated.log)" >&2
  exit 1
fi
echo "check_install: building the wheel against .venv's torch"
if ! MAX_JOBS=${MAX_JOBS:-$(nproc)} .venv/bin/python -m build --wheel --no-isolation --outdir "$work/dist" . >"$work/build.log" 2>&1; then
  tail -40 "$work/build.log" >&2
  echo "check_install: the wheel did not build (log: $work/build.log)" >&2
  exit 1
fi
wheel=$(ls "$work"/dist/actattn-*.whl)
wheel_files=$(.venv/bin/python -m zipfile -l "$wheel")
for packaged in actattn/lib/libactattn.so actattn/include/actattn/actattn.h actattn/share/cmake/actattn/actattnConfig.cmake \
  actattn/share/cmake/actattn/actattnConfigVersion.cmake; do
  grep -q "^$packaged " <<<"$wheel_files" || { echo "check_install: the wheel lacks $packaged" >&2; exit 1; }
done
if grep -E '^actattn/include/' <<<"$wheel_files" | grep -qv '^actattn/include/actattn/actattn.h '; then
  echo "check_install: the wheel carries internal headers" >&2
  exit 1
fi

# pip's warnings about index locations this machine's pip configuration names but lacks are dropped.
quiet_pip() { "$work/venv/bin/python" -m pip install -q "$@" 2>&1 | { grep -v '^WARNING: Location' || true; }; }
python3 -m venv "$work/venv"
quiet_pip "$wheel"
repo=$PWD
cd "$(mktemp -d)"  # outside the source tree: only the installed package can be imported
"$work/venv/bin/python" - <<'PY'
import importlib.util

import torch

import actattn

assert "site-packages" in actattn.__file__, actattn.__file__
# The Python module is a thin module over the library C++ programs link: loading the library again (as
# a C++ extension of torch would) finds it loaded and registers nothing twice.
torch.ops.load_library(actattn.library_path)
q, k, v = (torch.randn(1, 2, 16, 8, dtype=torch.float64, requires_grad=True) for _ in range(3))
out = actattn.attention(q, k, v, activation="relu", causal=True)
out.sum().backward()
expected = actattn.reference.attention(q.detach(), k.detach(), v.detach(), "relu", True)
assert torch.allclose(out, expected), "the installed kernels disagree with the reference"
missing = [name for name in ("matplotlib", "tqdm") if importlib.util.find_spec(name) is not None]
assert not missing, f"the core install brought the trainer's dependencies: {missing}"
print(f"check_install: the wheel installs and imports without extras (actattn {actattn.__version__})")
PY
if "$work/venv/bin/actattn-compare" --quick >compare-without-extra.log 2>&1 \
  || ! grep -q "pip install 'actattn\[compare\]'" compare-without-extra.log; then
  cat compare-without-extra.log >&2
  echo "check_install: without the compare extra the trainer must stop and name it" >&2
  exit 1
fi
# C++ from the same install: only actattn's prefix is given; its config finds the torch installed next to it.
prefix=$("$work/venv/bin/python" -c 'import actattn; print(actattn.cmake_prefix_path)')
cmake -S "$repo/examples/cpp" -B "$work/example" -DCMAKE_PREFIX_PATH="$prefix" >"$work/example.log"
cmake --build "$work/example" -j "$(nproc)" >>"$work/example.log"
for kind in softmax linear-elu; do
  "$work/example/train_attention" --kind "$kind" --steps 300 | tail -n 1
done
echo "check_install: examples/cpp found the wheel's CMake package, built against its library and trained"
quiet_pip "$wheel[compare]"
"$work/venv/bin/actattn-compare" --quick --steps 4 --kinds softmax linear-elu --sweep-depths --cost-lengths \
  --no-progress --out compare >compare.log
test -s compare/report.md && test -s compare/loss.png
echo "check_install: with the compare extra the console script ran a comparison"
