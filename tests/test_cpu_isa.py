"""The CPU kernels' builds, one per vector ISA, and the run-time choice among them (kernels/cpu_isa.h).

Each build this CPU can run is forced in a child process (ACTATTN_CPU_ISA is read once per process) and
checked against the reference; the builds it cannot run, and unknown names, must be refused with a
message. The library's machine code is checked too: only the avx2 and avx512 builds' own functions may
use AVX (and only avx512's AVX-512), or a CPU without them could crash in code every CPU runs.
"""

import os
import platform
import re
import shutil
import subprocess
import sys

import pytest

import actattn

X86 = platform.machine() in ("x86_64", "AMD64")
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def builds_asked_for():
    """The builds the library should have, best first: on x86-64 those kernels/cpu/isa_builds.txt
    describes (or, where ACTATTN_CPU_ISAS is set as for the build, those it names), then baseline."""
    if not X86:
        return ("baseline",)
    with open(os.path.join(REPO, "kernels", "cpu", "isa_builds.txt")) as described:
        names = [line.split()[0] for line in described if line.strip() and not line.startswith("#")]
    chosen = os.environ.get("ACTATTN_CPU_ISAS")
    if chosen is not None:
        names = [name for name in names if name in chosen.replace(",", " ").split()]
    return (*reversed(names), "baseline")


BUILDS = builds_asked_for()
# /proc/cpuinfo flag names of the x86-64 levels the builds are compiled for (-march=x86-64-v3, -v4).
X86_64_V3_FLAGS = {"avx", "avx2", "bmi1", "bmi2", "f16c", "fma", "abm", "movbe", "xsave"}
X86_64_V4_FLAGS = X86_64_V3_FLAGS | {"avx512f", "avx512bw", "avx512cd", "avx512dq", "avx512vl"}


def cpu_flags():
    try:
        with open("/proc/cpuinfo") as cpuinfo:
            for line in cpuinfo:
                if line.startswith("flags"):
                    return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return None


def builds_this_cpu_runs():
    flags = cpu_flags()
    if not X86 or flags is None:
        return ["baseline"]
    runs = {"baseline": True, "avx2": X86_64_V3_FLAGS <= flags, "avx512": X86_64_V4_FLAGS <= flags}
    return [build for build in BUILDS if runs[build]]


def run_with_build(build, code):
    env = dict(os.environ, ACTATTN_CPU_ISA=build)
    return subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300)


def test_the_default_is_the_best_build_this_cpu_runs():
    forced = os.environ.get("ACTATTN_CPU_ISA")  # tools/test.sh runs part of the suite on each build
    expected = forced if forced else builds_this_cpu_runs()[0]
    assert actattn.cpu_isa() == expected


# Odd sizes: rows and columns that fill no register block of any build (4 x 8, 4 x 16, 8 x 32), chunks
# and key tiles with remainders, Dk != Dv.
AGAINST_REFERENCE = """
import torch, actattn
from actattn import reference
torch.manual_seed(0)
print(actattn.cpu_isa())
def linear(f, q, k, v, feature_map, causal):  # the reference names the feature map differently
    name = "feature_map" if f is actattn else "feature_map_name"
    return f.linear_attention(q, k, v, causal=causal, **{name: feature_map})
for dtype, rtol, atol in ((torch.float32, 2e-4, 2e-5), (torch.float64, 1e-10, 1e-12)):
    q, k, v, grad = (torch.randn(2, 3, n, d, dtype=dtype) for n, d in ((150, 40), (150, 40), (150, 72), (150, 72)))
    calls = {
        "softmax": lambda f, q, k, v: f.attention(q, k, v),
        "softmax causal": lambda f, q, k, v: f.attention(q, k, v, causal=True),
        "sigmoid causal": lambda f, q, k, v: f.attention(q, k, v, activation="sigmoid", causal=True),
        "relu": lambda f, q, k, v: f.attention(q, k, v, activation="relu"),
        "linear elu causal": lambda f, q, k, v: linear(f, q, k, v, "elu", causal=True),
        "linear relu": lambda f, q, k, v: linear(f, q, k, v, "relu", causal=False),
    }
    for name, call in calls.items():
        inputs = [t.clone().requires_grad_() for t in (q, k, v)]
        out = call(actattn, *inputs)
        out = out[0] if isinstance(out, tuple) else out
        grads = torch.autograd.grad(out, inputs, grad)
        ref_inputs = [t.double().requires_grad_() for t in (q, k, v)]
        ref = call(reference, *ref_inputs)
        ref = ref[0] if isinstance(ref, tuple) else ref
        ref_grads = torch.autograd.grad(ref, ref_inputs, grad.double())
        for what, got, want in zip(("out", "dq", "dk", "dv"), (out, *grads), (ref, *ref_grads)):
            torch.testing.assert_close(got.double(), want, rtol=rtol, atol=atol, msg=lambda m: f"{name} {dtype} {what}: {m}")
"""


@pytest.mark.parametrize("build", builds_this_cpu_runs())
def test_each_build_this_cpu_runs_matches_the_reference(build):
    result = run_with_build(build, AGAINST_REFERENCE)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.split()[0] == build


@pytest.mark.parametrize("build", [b for b in BUILDS if b not in builds_this_cpu_runs()] or [None])
def test_a_build_this_cpu_cannot_run_is_refused_with_the_reason(build):
    if build is None:
        pytest.skip("this CPU runs every build of the library")
    result = run_with_build(build, "import torch, actattn; actattn.attention(*torch.randn(3, 1, 1, 4, 8))")
    assert result.returncode != 0
    assert f"ACTATTN_CPU_ISA={build} asks for the {build} build" in result.stderr
    assert f"the best it can run is {builds_this_cpu_runs()[0]}" in result.stderr


def test_the_library_has_the_builds_asked_for():
    # The refusal of an unknown name lists the library's builds, best first (kernels/cpu_isa.cpp).
    result = run_with_build("avx9", "import actattn; actattn.cpu_isa()")
    has = re.search(r"this library has ([a-z0-9, ]+) \(unset", result.stderr)
    assert has, result.stderr[-2000:]
    assert tuple(has.group(1).split(", ")) == BUILDS


def test_an_unknown_build_is_refused_naming_the_builds():
    result = run_with_build("avx9", "import actattn; actattn.cpu_isa()")
    assert result.returncode != 0
    assert f"ACTATTN_CPU_ISA=avx9 names no build of actattn's CPU kernels; this library has {', '.join(BUILDS)}" \
        in result.stderr


@pytest.mark.skipif(not X86, reason="the extra builds exist on x86-64 only")
@pytest.mark.parametrize("chosen, built", [(None, "baseline, avx2, avx512"), ("avx2", "baseline, avx2"),
                                            ("avx512, avx2", "baseline, avx2, avx512"), ("", "baseline"),
                                            ("avx3", None)])
def test_the_build_option_picks_described_builds_and_refuses_others(chosen, built):
    # setup.py's reading of ACTATTN_CPU_ISAS and kernels/cpu/isa_builds.txt (CMake reads the same file; CI
    # builds with the option: the sanitizer build with this CPU's best build only, the CUDA check with none).
    env = {name: value for name, value in os.environ.items() if name != "ACTATTN_CPU_ISAS"}
    if chosen is not None:
        env["ACTATTN_CPU_ISAS"] = chosen
    result = subprocess.run([sys.executable, "setup.py", "--name"], cwd=REPO, capture_output=True, text=True,
                            env=env, timeout=120)
    if built:
        assert result.returncode == 0, result.stderr[-3000:]
        assert f"actattn: the CPU kernels' builds: {built}\n" in result.stdout
    else:
        assert result.returncode != 0
        assert "ACTATTN_CPU_ISAS names ['avx3']; the CPU kernels' extra builds are ['avx2', 'avx512']" in result.stderr


def functions_and_instructions(library):
    """{demangled function name: [instruction lines]} of the library's code."""
    listing = subprocess.run(["objdump", "-d", "-C", "--no-show-raw-insn", library], capture_output=True,
                             text=True, check=True).stdout
    functions, current = {}, None
    for line in listing.splitlines():
        header = re.match(r"^[0-9a-f]+ <(.*)>:$", line)
        if header:
            current = functions.setdefault(header.group(1), [])
        elif current is not None and "\t" in line:
            current.append(line.split("\t", 1)[1])
    return functions


# AVX and later encode every SIMD instruction with a "v" prefix (VEX / EVEX); AVX-512 adds the mask
# registers k0-k7 and the 512-bit zmm registers. x86-64-v3 also brings BMI's scalar instructions.
BMI = {"andn", "bextr", "blsi", "blsmsk", "blsr", "bzhi", "mulx", "pdep", "pext", "rorx", "sarx", "shlx", "shrx"}


def uses_avx(instruction):
    mnemonic = instruction.split()[0]
    return (mnemonic.startswith("v") and "%" in instruction) or mnemonic.startswith("k") or mnemonic in BMI


def uses_avx512(instruction):
    return "%zmm" in instruction or re.search(r"%k[0-7]", instruction) is not None or "{" in instruction


def shared_function_names(library):
    """The functions other objects of the library can call: global and weak ones (nm's upper-case
    letters), which the linker merges across objects, and the static initialisers, which run at load."""
    listing = subprocess.run(["nm", "-C", "--defined-only", library], capture_output=True, text=True,
                             check=True).stdout
    names = set()
    for line in listing.splitlines():
        _, kind, name = line.split(" ", 2)
        if kind in "TWiu" or name.startswith("_GLOBAL__sub_I"):
            names.add(name)
    return names


@pytest.mark.skipif(not X86 or shutil.which("objdump") is None or shutil.which("nm") is None,
                    reason="needs x86-64, objdump and nm")
def test_only_the_avx_builds_own_code_uses_avx():
    """A local function (a compiler's clone of a standard-library function, say) of an AVX build is called
    only from its own object, so only from that build; a shared one may be called from anywhere."""
    functions = functions_and_instructions(actattn.library_path)
    shared = shared_function_names(actattn.library_path)
    assert any("actattn::cpu::baseline::" in name for name in functions), "the baseline build is missing"
    avx2 = [name for name in functions if "::avx2::" in name]
    avx512 = [name for name in functions if "::avx512::" in name]
    assert bool(avx2) == ("avx2" in BUILDS) and bool(avx512) == ("avx512" in BUILDS), \
        f"the library's code holds other builds than {BUILDS}"
    if avx512:
        assert any(uses_avx512(i) for name in avx512 for i in functions[name]), "the avx512 build uses no AVX-512"
    leaks = [f"{name}: {next(i for i in instructions if uses_avx(i))}" for name, instructions in functions.items()
             if "::avx2::" not in name and "::avx512::" not in name and name in shared
             and any(map(uses_avx, instructions))]
    assert not leaks, "AVX outside the avx2 / avx512 builds, run on every CPU:\n" + "\n".join(leaks[:20])
    leaks = [f"{name}: {next(i for i in functions[name] if uses_avx512(i))}" for name in avx2
             if "::avx512::" not in name and any(map(uses_avx512, functions[name]))]
    assert not leaks, "AVX-512 in the avx2 build:\n" + "\n".join(leaks[:20])
