"""Loads the compiled operators; every other module reaches them as torch.ops.actattn.*."""

import torch


def explain_load_error(error: ImportError) -> ImportError:
    """The error to raise when the extension does not load: what went wrong in a user's terms."""
    if isinstance(error, ModuleNotFoundError) and error.name == "actattn._C":
        return ImportError("actattn's C++ extension (actattn._C) is not built. From a source checkout: "
                           "pip install --no-build-isolation -e . (or python setup.py build_ext --inplace)")
    if "undefined symbol" in str(error):
        # A torch extension links against one torch version's C++ symbols; another version lacks some.
        return ImportError(f"actattn's C++ extension does not fit the torch installed here ({torch.__version__}): "
                           "it was built against another torch version. Rebuild it against this one: "
                           "pip install --no-build-isolation --force-reinstall <actattn source or sdist>. "
                           f"Loader said: {error}")
    return error


try:
    from . import _C  # registers torch.ops.actattn
except ImportError as error:
    raise explain_load_error(error) from error

ops = torch.ops.actattn

# The option names, from the table the C++ ops parse with (csrc/names.h).
SCORE_ACTIVATIONS = _C.SCORE_ACTIVATIONS
FEATURE_MAPS = _C.FEATURE_MAPS
CAUSAL_ALIGNMENTS = _C.CAUSAL_ALIGNMENTS


def cpu_isa() -> str:
    """The build of the CPU kernels that runs in this process: "avx512" or "avx2" (x86-64) or "baseline".

    The library holds one build per vector instruction set and takes the best this CPU supports, unless
    the environment variable ACTATTN_CPU_ISA (read once, at the first CPU kernel call) names another.
    Raises RuntimeError when it names a build the library lacks or this CPU cannot run; so do the CPU ops.
    """
    return _C.cpu_isa()
