#!/usr/bin/env bash
# Sets up everything actattn needs on a fresh Debian machine, idempotently:
# the compilers, CMake and GoogleTest (Debian packages), a virtual environment in .venv with torch and
# the test tools, and actattn itself installed in editable mode (its C++ extension built in place).
set -euo pipefail
cd "$(dirname "$0")/.."

missing=()
for tool in g++ make cmake; do command -v "$tool" >/dev/null || missing+=("$tool"); done
[ -f /usr/include/gtest/gtest.h ] || missing+=(libgtest-dev)  # the C++ tests (tests/cpp)
# ccache: torch's extension builds use it when installed; tools/test.sh compiles the library more than
# once (bootstrap, then the wheel check's isolated build of the same sources), and it serves the repeats.
command -v ccache >/dev/null || missing+=(ccache)
if [ ${#missing[@]} -gt 0 ]; then
  echo "bootstrap: installing Debian packages: ${missing[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
fi

PYTHON=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
.venv/bin/python -m pip install -q -r requirements-dev.txt

# The build uses the venv's torch (no build isolation: an extension only loads into the torch it was built
# against), with both cores; the compare extra brings what the main job (the trainer) needs.
MAX_JOBS=${MAX_JOBS:-$(nproc)} .venv/bin/python -m pip install -q --no-build-isolation -e ".[compare]"
.venv/bin/python -c "import actattn, torch; print('bootstrap: actattn', actattn.__version__, 'with torch', torch.__version__)"
