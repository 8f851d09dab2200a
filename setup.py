"""Builds actattn's C++ extension (actattn._C) with torch.utils.cpp_extension (the package itself is
described in pyproject.toml).

CPU kernels are always built. The CUDA kernels are built too when torch is a CUDA build and nvcc is
found (CUDA_HOME), unless ACTATTN_CUDA=0; ACTATTN_CUDA=1 makes a missing CUDA toolchain an error.
TORCH_CUDA_ARCH_LIST picks the GPU targets (default: the visible GPU's, else torch's list), e.g.
TORCH_CUDA_ARCH_LIST="8.0;9.0".
"""

import glob
import os
import platform
import shlex

from setuptools import setup
import torch
from torch.utils.cpp_extension import CUDA_HOME, BuildExtension, CppExtension, CUDAExtension

ROOT = os.path.dirname(os.path.abspath(__file__))


def sources(with_cuda):
    # Relative paths: setuptools refuses absolute ones in an extension's sources.
    patterns = ["csrc/*.cpp", "kernels/cpu/*.cpp"]
    if with_cuda:
        patterns += ["csrc/cuda/*.cpp", "kernels/cuda/*.cu"]
    return sorted(f for pattern in patterns for f in glob.glob(pattern, root_dir=ROOT))


def want_cuda():
    """Whether to build the CUDA kernels (see the module docstring)."""
    choice = os.environ.get("ACTATTN_CUDA", "auto")
    possible = torch.version.cuda is not None and CUDA_HOME is not None
    if choice == "0":
        return False
    if choice == "1" and not possible:
        raise RuntimeError(
            f"ACTATTN_CUDA=1 but torch {torch.__version__} is not a CUDA build or nvcc was not found "
            f"(CUDA_HOME={CUDA_HOME})"
        )
    if not possible:
        print(f"actattn: building the CPU kernels only (torch {torch.__version__}, CUDA_HOME={CUDA_HOME})")
    return possible


def cpu_arch_flags():
    """Vector ISA of the CPU kernels: AVX2 + FMA (x86-64-v3) on x86-64, the compiler's default elsewhere.

    ACTATTN_CPU_FLAGS overrides it, e.g. "-march=native" for the build machine's own CPU or "" for a
    pre-2013 x86 CPU without AVX2.
    """
    if "ACTATTN_CPU_FLAGS" in os.environ:
        return shlex.split(os.environ["ACTATTN_CPU_FLAGS"])
    return ["-march=x86-64-v3"] if platform.machine() in ("x86_64", "AMD64") else []


def extension():
    debug = os.environ.get("ACTATTN_DEBUG", "0") == "1"
    with_cuda = want_cuda()
    # -fno-math-errno and -fno-trapping-math let the kernels' math vectorise (kernels/exp.h); unlike
    # -ffast-math they keep NaN and inf semantics.
    cxx_flags = ["-fopenmp", "-Wall", "-fno-math-errno", "-fno-trapping-math"] + cpu_arch_flags()
    cxx_flags += ["-O0", "-g"] if debug else ["-O3"]
    nvcc_flags = ["--expt-relaxed-constexpr", "-lineinfo"] + (["-O0", "-G"] if debug else ["-O3"])
    build = CUDAExtension if with_cuda else CppExtension
    return build(
        name="actattn._C",
        sources=sources(with_cuda),
        include_dirs=[os.path.join(ROOT, "include")],  # the public header, <actattn/actattn.h>
        extra_compile_args={"cxx": cxx_flags, "nvcc": nvcc_flags} if with_cuda else {"cxx": cxx_flags},
        extra_link_args=["-fopenmp"],
    )


# Name, version, dependencies, extras and scripts are in pyproject.toml; this file adds the extension.
setup(ext_modules=[extension()], cmdclass={"build_ext": BuildExtension})
