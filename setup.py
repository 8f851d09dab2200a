"""Builds actattn's compiled parts with torch.utils.cpp_extension (the package itself is described in
pyproject.toml):

- actattn/lib/libactattn.so: the ops, kernels and C++ API, linked to LibTorch but not to Python, so the
  same library serves a C++ program (find_package(actattn) with actattn.cmake_prefix_path; the header is
  actattn/include/actattn/actattn.h) and Python;
- actattn/_C: the thin Python module over it (csrc/python_module.cpp), which loads the library through
  its $ORIGIN/lib run path; loading the library registers the ops, once, whoever loads it first.

CPU kernels are always built. The CUDA kernels are built too when torch is a CUDA build and nvcc is
found (CUDA_HOME), unless ACTATTN_CUDA=0; ACTATTN_CUDA=1 makes a missing CUDA toolchain an error.
TORCH_CUDA_ARCH_LIST picks the GPU targets (default: the visible GPU's, else torch's list), e.g.
TORCH_CUDA_ARCH_LIST="8.0;9.0".
"""

import glob
import os
import platform
import sysconfig

from setuptools import setup
import torch
from torch.utils.cpp_extension import CUDA_HOME, BuildExtension, CppExtension, CUDAExtension

ROOT = os.path.dirname(os.path.abspath(__file__))


LIBRARY = "actattn.lib.libactattn"
MODULE = "actattn._C"
MODULE_SOURCE = "csrc/python_module.cpp"


def library_sources(with_cuda):
    # Relative paths: setuptools refuses absolute ones in an extension's sources.
    patterns = ["csrc/*.cpp", "kernels/*.cpp", "kernels/cpu/*.cpp"]
    if with_cuda:
        patterns += ["csrc/cuda/*.cpp", "kernels/cuda/*.cu"]
    found = (f for pattern in patterns for f in glob.glob(pattern, root_dir=ROOT))
    return sorted(f for f in found if f != MODULE_SOURCE)


def compile_order(sources):
    """The CUDA sources first, the tensor-core ones (the most instantiations) first among them: each takes
    minutes to compile, a C++ source seconds, and ninja starts them in the order given, so that a build on
    few cores does not end on one of them compiling alone (setuptools sorts the sources by name)."""
    return sorted(sources, key=lambda f: (not f.endswith(".cu"), not f.endswith("_tc.cu"), f))


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


def extra_cpu_isas():
    """The builds of the CPU kernels (kernels/cpu/isa.h) besides `baseline`, which is compiled with the
    library's own flags (the compiler's default ISA): name -> compiler flags, as kernels/cpu/isa_builds.txt
    describes them, on x86-64 only. kernels/cpu_isa.cpp picks one at run time, so the library runs on any
    CPU of its architecture and never needs -march=native. ACTATTN_CPU_ISAS (names separated by commas or
    spaces; empty for the baseline build alone) builds only some of them: quicker, for development.
    """
    if platform.machine() not in ("x86_64", "AMD64"):
        return {}
    with open(os.path.join(ROOT, "kernels", "cpu", "isa_builds.txt")) as described:
        lines = (line.split() for line in described if line.strip() and not line.startswith("#"))
        builds = {fields[0]: fields[1:] for fields in lines}
    chosen = os.environ.get("ACTATTN_CPU_ISAS")
    if chosen is None:
        return builds
    names = chosen.replace(",", " ").split()
    unknown = sorted(set(names) - set(builds))
    if unknown:
        raise RuntimeError(f"ACTATTN_CPU_ISAS names {unknown}; the CPU kernels' extra builds are {list(builds)}")
    # In the file's order, lowest ISA first: the link order compile_extra_cpu_isas relies on.
    return {name: flags for name, flags in builds.items() if name in names}


def cpu_isa_sources():
    """What each extra ISA build compiles: every source of kernels/cpu/."""
    return sorted(glob.glob("kernels/cpu/*.cpp", root_dir=ROOT))


def extensions():
    debug = os.environ.get("ACTATTN_DEBUG", "0") == "1"
    with_cuda = want_cuda()
    # -fno-math-errno and -fno-trapping-math let the kernels' math vectorise (kernels/exp.h); unlike
    # -ffast-math they keep NaN and inf semantics.
    cxx_flags = ["-fopenmp", "-Wall", "-fno-math-errno", "-fno-trapping-math"]
    # kernels/cpu_isa.cpp offers exactly the builds compiled.
    cpu_isas = extra_cpu_isas()
    cxx_flags += [f"-DACTATTN_CPU_BUILD_{isa.upper()}" for isa in cpu_isas]
    print(f"actattn: the CPU kernels' builds: {', '.join(['baseline', *cpu_isas])}")
    # -g1 (line tables: backtraces and profiles still name files and lines) overrides the -g of Python's
    # build flags, whose full debug info of torch's templates nearly doubled the compile time of csrc/
    # (261 against 152 CPU-seconds on the development machine) in every build CI makes.
    cxx_flags += ["-O0", "-g"] if debug else ["-O3", "-g1"]
    nvcc_flags = ["--expt-relaxed-constexpr", "-lineinfo"] + (["-O0", "-G"] if debug else ["-O3"])
    build = CUDAExtension if with_cuda else CppExtension
    library = build(
        name=LIBRARY,
        sources=library_sources(with_cuda),
        include_dirs=[os.path.join(ROOT, "python", "actattn", "include")],  # <actattn/actattn.h>
        extra_compile_args={"cxx": cxx_flags, "nvcc": nvcc_flags} if with_cuda else {"cxx": cxx_flags},
        # The soname is what a program linking the library records, not the path it was linked from.
        extra_link_args=["-fopenmp", "-Wl,-soname,libactattn.so"],
    )
    # A C++ program must be able to link the library without Python: torch_python needs libpython.
    library.libraries.remove("torch_python")
    module = CppExtension(
        name=MODULE,
        sources=[MODULE_SOURCE],
        extra_compile_args={"cxx": ["-Wall"] + (["-O0", "-g"] if debug else ["-O2", "-g1"])},
    )
    return [library, module]


class BuildLibraryAndModule(BuildExtension):
    """Names the library libactattn.so (no Python ABI suffix: it is not a module), and links the module to
    it with a run path relative to the module, so the pair works wherever the package is installed."""

    def get_ext_filename(self, ext_name):
        filename = super().get_ext_filename(ext_name)
        if ext_name.split(".")[-1] == LIBRARY.split(".")[-1]:
            suffix = sysconfig.get_config_var("EXT_SUFFIX")
            filename = filename[: -len(suffix)] + ".so" if filename.endswith(suffix) else filename
        return filename

    def copy_extensions_to_source(self):  # in-place builds (editable installs, build_ext --inplace)
        # The library's folder (actattn/lib) is not a Python package, so nothing else creates it.
        package_dir = self.get_finalized_command("build_py").get_package_dir(LIBRARY.rpartition(".")[0])
        os.makedirs(package_dir, exist_ok=True)
        super().copy_extensions_to_source()

    def build_extension(self, ext):
        compile_sources = self.compiler.compile  # torch's: writes the sources into a ninja file, in order
        if ext.name == LIBRARY:
            ext.extra_objects = self.compile_extra_cpu_isas(ext) + list(ext.extra_objects)
            self.compiler.compile = lambda sources, *args, **kwargs: compile_sources(
                compile_order(sources), *args, **kwargs)
        if ext.name == MODULE:
            # The library is built first (extensions build in list order). Named by its path after
            # --no-as-needed: the module calls none of its functions, loading it is the point.
            ext.extra_link_args = ["-Wl,--no-as-needed", self.get_ext_fullpath(LIBRARY), "-Wl,-rpath,$ORIGIN/lib"]
        try:
            super().build_extension(ext)
        finally:
            self.compiler.compile = compile_sources

    def compile_extra_cpu_isas(self, ext):
        """Compiles kernels/cpu/ once per extra ISA, each into its own folder with its own flags, and
        returns the objects. They are linked after the library's own objects, the baseline build among
        them, so that where two builds still share an inline function (a standard-library one: the
        kernels' own are apart by namespace), the linker keeps the copy of the lowest ISA, which runs on
        every CPU that runs the others."""
        objects = []
        for isa, flags in extra_cpu_isas().items():
            objects += self.compiler.compile(
                cpu_isa_sources(),
                output_dir=os.path.join(self.build_temp, f"cpu-{isa}"),
                macros=ext.define_macros,
                include_dirs=ext.include_dirs,
                debug=self.debug,
                extra_postargs=ext.extra_compile_args["cxx"] + flags + [f"-DACTATTN_CPU_ISA={isa}"],
                depends=ext.depends,
            )
        return objects


# Name, version, dependencies, extras and scripts are in pyproject.toml; this file adds the compiled parts.
setup(ext_modules=extensions(), cmdclass={"build_ext": BuildLibraryAndModule})
