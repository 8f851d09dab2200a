"""Builds actattn's C++ extension (actattn._C) with torch.utils.cpp_extension.

CPU kernels are always built. CUDA kernels are added by the CUDA issue; until then the build is
CPU-only and says so.
"""

import glob
import os

from setuptools import find_packages, setup
from torch.utils.cpp_extension import BuildExtension, CppExtension

ROOT = os.path.dirname(os.path.abspath(__file__))


def sources():
    # Relative paths: setuptools refuses absolute ones in an extension's sources.
    files = glob.glob("csrc/*.cpp", root_dir=ROOT) + glob.glob("kernels/cpu/*.cpp", root_dir=ROOT)
    return sorted(files)


def extension():
    debug = os.environ.get("ACTATTN_DEBUG", "0") == "1"
    cxx_flags = ["-fopenmp", "-Wall"]
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
