"""Builds actattn's C++ extension (actattn._C) with torch.utils.cpp_extension.

CPU kernels are always built. CUDA kernels are added by the CUDA issue; until then the build is
CPU-only and says so.
"""

import glob
import os
import platform
import shlex

from setuptools import find_packages, setup
from torch.utils.cpp_extension import BuildExtension, CppExtension

ROOT = os.path.dirname(os.path.abspath(__file__))


def sources():
    # Relative paths: setuptools refuses absolute ones in an extension's sources.
    files = glob.glob("csrc/*.cpp", root_dir=ROOT) + glob.glob("kernels/cpu/*.cpp", root_dir=ROOT)
    return sorted(files)


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
    # -fno-math-errno lets exp() vectorise; unlike -ffast-math it keeps NaN and inf semantics.
    cxx_flags = ["-fopenmp", "-Wall", "-fno-math-errno"] + cpu_arch_flags()
    cxx_flags += ["-O0", "-g"] if debug else ["-O3"]
    return CppExtension(
        name="actattn._C",
        sources=sources(),
        extra_compile_args={"cxx": cxx_flags},
        extra_link_args=["-fopenmp"],
    )


setup(
    name="actattn",
    version="0.1.0",
    description="Attention with softmax, sigmoid, ReLU and linear (feature-map) activations as torch custom ops",
    package_dir={"": "python"},
    packages=find_packages("python"),
    ext_modules=[extension()],
    cmdclass={"build_ext": BuildExtension},
    python_requires=">=3.10",
    install_requires=["torch>=2.4"],
)
