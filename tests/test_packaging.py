"""Packaging: one version, a core that needs torch only, and load errors that say what to do.
(tools/check_install.sh builds the wheel and installs it into a fresh venv; this checks the pieces.)"""

import importlib.metadata
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import actattn
from actattn._ops import explain_load_error

PYPROJECT = tomllib.loads((Path(__file__).parents[1] / "pyproject.toml").read_text())


def test_the_version_is_written_once():
    assert PYPROJECT["project"]["dynamic"] == ["version"]
    assert PYPROJECT["tool"]["setuptools"]["dynamic"]["version"] == {"attr": "actattn.__version__"}
    assert importlib.metadata.version("actattn") == actattn.__version__


def test_the_core_needs_torch_only_and_the_trainer_has_an_extra():
    assert [d.split(">")[0].split("=")[0] for d in PYPROJECT["project"]["dependencies"]] == ["torch"]
    assert set(PYPROJECT["project"]["optional-dependencies"]["compare"]) == {"matplotlib", "tqdm"}
    assert "torch>=2.4" in PYPROJECT["build-system"]["requires"]


def test_an_unbuilt_extension_says_how_to_build_it():
    error = explain_load_error(ModuleNotFoundError("No module named 'actattn._C'", name="actattn._C"))
    assert "not built" in str(error) and "pip install --no-build-isolation" in str(error)


def test_an_extension_built_for_another_torch_says_so():
    loader = ImportError("_C.so: undefined symbol: _ZN3c1017RegisterOperatorsD1Ev")
    message = str(explain_load_error(loader))
    assert "another torch version" in message and "--no-build-isolation" in message
    assert "_ZN3c1017RegisterOperatorsD1Ev" in message, "the loader's own words are kept"


def test_other_load_errors_pass_through():
    error = ImportError("libgomp.so.1: cannot open shared object file")
    assert explain_load_error(error) is error


def test_console_scripts_name_functions_that_return_nothing():
    scripts = PYPROJECT["project"]["scripts"]
    assert scripts == {"actattn-compare": "actattn.compare:cli", "actattn-demo": "actattn.demo:main"}


def test_the_package_carries_the_cpp_library_header_and_cmake_package():
    prefix = Path(actattn.cmake_prefix_path)
    assert Path(actattn.library_path).is_file()
    assert (Path(actattn.__file__).parent / "include" / "actattn" / "actattn.h").is_file()
    assert (prefix / "actattn" / "actattnConfig.cmake").is_file()
    assert (prefix / "actattn" / "actattnConfigVersion.cmake").is_file()
    data = PYPROJECT["tool"]["setuptools"]["package-data"]["actattn"]
    assert "include/actattn/*.h" in data and "share/cmake/actattn/*.cmake" in data


LOAD_LIBRARY = """
import sys, torch, actattn
torch.ops.load_library(sys.argv[1])
print("loaded")
"""


def _load_library_after_import(path):
    return subprocess.run([sys.executable, "-c", LOAD_LIBRARY, str(path)], capture_output=True, text=True,
                          timeout=120)


def test_python_and_cpp_share_one_registration(tmp_path):
    # `import actattn` loads lib/libactattn.so through the thin _C module; loading that library again (as
    # C++ code in the same process would) finds it loaded and registers nothing twice ...
    same = _load_library_after_import(actattn.library_path)
    assert same.returncode == 0 and "loaded" in same.stdout, same.stderr
    # ... whereas a second copy of the ops is refused: this is what the shared library avoids.
    copy = tmp_path / "libactattn_copy.so"
    shutil.copy(actattn.library_path, copy)
    other = _load_library_after_import(copy)
    assert other.returncode != 0 and "loaded" not in other.stdout
    assert "previously registered" in other.stderr or "already" in other.stderr, other.stderr[-2000:]
