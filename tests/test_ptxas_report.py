"""tools/ptxas_report.py, which turns nvcc -Xptxas -v output into CI's register and spill table."""

import importlib.util
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[1] / "tools" / "ptxas_report.py"
CLEAN_ENTRY = """\
ptxas info    : Compiling entry function '_ZN7actattn4cuda17linear_forward_tc14forward_kernelI13__nv_bfloat16NS_13EluPlusOneMapELb0ELi128EEEvNS_12LinearParamsE' for 'sm_90'
ptxas info    : Function properties for _ZN7actattn4cuda17linear_forward_tc14forward_kernelI13__nv_bfloat16NS_13EluPlusOneMapELb0ELi128EEEvNS_12LinearParamsE
    0 bytes stack frame, 0 bytes spill stores, 0 bytes spill loads
ptxas info    : Used 236 registers, used 1 barriers
"""
SPILLING_ENTRY = """\
ptxas info    : Compiling entry function '_ZN7actattn4cuda17linear_forward_tc14forward_kernelI13__nv_bfloat16NS_13EluPlusOneMapELb1ELi128EEEvNS_12LinearParamsE' for 'sm_80'
ptxas info    : Function properties for _ZN7actattn4cuda17linear_forward_tc14forward_kernelI13__nv_bfloat16NS_13EluPlusOneMapELb1ELi128EEEvNS_12LinearParamsE
    40 bytes stack frame, 36 bytes spill stores, 44 bytes spill loads
ptxas info    : Used 255 registers, used 1 barriers
"""
LOG = "ptxas info    : 0 bytes gmem\n" + CLEAN_ENTRY + SPILLING_ENTRY


def load():
    spec = importlib.util.spec_from_file_location("ptxas_report", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_reads_registers_and_spills_per_entry_and_lists_the_spilling_ones(tmp_path, capsys):
    report = load()
    records = report.parse(LOG)
    assert [(r["arch"], r["registers"], r["spill_stores"], r["spill_loads"]) for r in records] == [
        ("sm_90", 236, 0, 0), ("sm_80", 255, 36, 44)]
    (tmp_path / "build.log").write_text(LOG)
    assert report.main([str(tmp_path / "build.log"), "--table", str(tmp_path / "table.md")]) == 0
    out = capsys.readouterr().out
    assert "2 kernel instantiations (1 for sm_80, 1 for sm_90); most registers 255; 1 of them spill" in out
    spilling = [line for line in out.splitlines() if line.startswith("| linear_forward_tc")]
    assert len(spilling) == 1 and "| sm_80 | 255 | 36 | 44 |" in spilling[0]
    table = (tmp_path / "table.md").read_text().splitlines()
    assert len(table) == 4 and "sm_80" in table[2]  # the spilling one first


def test_a_log_without_ptxas_output_is_an_error(tmp_path):
    (tmp_path / "build.log").write_text("nothing here\n")
    assert load().main([str(tmp_path / "build.log")]) == 1


def test_fail_on_spill_fails_only_when_an_instantiation_spills(tmp_path, capsys):
    report = load()
    (tmp_path / "spills.log").write_text(LOG)
    assert report.main([str(tmp_path / "spills.log"), "--fail-on-spill"]) == 2
    assert "FAILED: 1 kernel instantiations spill" in capsys.readouterr().out
    clean = LOG.replace("36 bytes spill stores, 44 bytes spill loads", "0 bytes spill stores, 0 bytes spill loads")
    (tmp_path / "clean.log").write_text(clean)
    assert report.main([str(tmp_path / "clean.log"), "--fail-on-spill"]) == 0


def test_names_the_sources_of_spilling_kernels_and_a_later_log_replaces_their_records(tmp_path, capsys):
    report = load()
    # As ninja prints them: each command, then its output.
    build = (f"[1/2] ccache /usr/local/cuda/bin/nvcc -MD -c /src/kernels/cuda/clean.cu -o clean.o -Xptxas -v\n{CLEAN_ENTRY}"
             f"[2/2] ccache /usr/local/cuda/bin/nvcc -MD -c /src/kernels/cuda/spills.cu -o spills.o -Xptxas -v\n{SPILLING_ENTRY}")
    (tmp_path / "build.log").write_text(build)
    sources = tmp_path / "spilled.txt"
    assert report.main([str(tmp_path / "build.log"), "--fail-on-spill", "--spilled-sources", str(sources)]) == 2
    assert sources.read_text() == "/src/kernels/cuda/spills.cu\n"

    # spills.cu compiled again (alone) without the spill: its new record replaces the old one.
    again = SPILLING_ENTRY.replace("36 bytes spill stores, 44 bytes spill loads", "0 bytes spill stores, 0 bytes spill loads")
    (tmp_path / "recheck.log").write_text(
        f"[1/1] /usr/local/cuda/bin/nvcc -MD -c /src/kernels/cuda/spills.cu -o spills.o -Xptxas -v\n{again}")
    capsys.readouterr()
    assert report.main([str(tmp_path / "build.log"), str(tmp_path / "recheck.log"), "--fail-on-spill",
                        "--spilled-sources", str(sources)]) == 0
    assert "2 kernel instantiations (1 for sm_80, 1 for sm_90); most registers 255; 0 of them spill" in capsys.readouterr().out
    assert sources.read_text() == ""
