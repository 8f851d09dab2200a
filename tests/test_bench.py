"""The benchmark script runs and prints its table (a smoke test: timings are not checked)."""

import importlib.util
from pathlib import Path

import torch

import actattn

BENCH = Path(__file__).resolve().parents[1] / "benchmarks" / "bench.py"


def load_bench():
    spec = importlib.util.spec_from_file_location("bench", BENCH)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_bench_prints_one_row_per_case_with_the_linear_floor(capsys):
    bench = load_bench()
    bench.main(["--device", "cpu", "--batch", "1", "--heads", "2", "--head-dim", "8", "--seq-lens", "16",
                "--repeats", "1", "--peak-gbs", "0.001"])
    rows = [line.split(" | ") for line in capsys.readouterr().out.splitlines() if line.startswith("| ")]
    header, cases = rows[0], rows[1:]
    assert len(header) == 10 and [row[0].strip("| ") for row in cases] == [
        "softmax", "softmax causal", "softmax dropout 0.1", "sigmoid causal", "relu causal", "linear elu",
        "linear relu causal", "linear elu causal"]
    # fwd+bwd floor: 12 passes over 1 x 2 x 16 x 8 float32 at 1 MB/s.
    floors = [row[-1].strip(" |") for row in cases]
    assert floors[:5] == ["—"] * 5 and floors[5:] == [f"{12 * 256 * 4 / 1e6 * 1e3:.2f}"] * 3
    assert all(float(value) > 0 for row in cases for value in row[3:9])


def test_bench_takes_a_value_head_dim_of_its_own(capsys):
    """--value-head-dim: v and the outputs 4 wide beside q and k 8 wide (multi-head latent attention's
    shapes); the linear floor counts 6 passes of each size."""
    bench = load_bench()
    bench.main(["--device", "cpu", "--batch", "1", "--heads", "2", "--head-dim", "8", "--value-head-dim", "4",
                "--seq-lens", "16", "--repeats", "1", "--peak-gbs", "0.001", "--cases", "softmax causal",
                "linear elu causal"])
    out = capsys.readouterr().out
    assert "Dk=8 Dv=4" in out
    rows = [line.split(" | ") for line in out.splitlines() if line.startswith("| ")][1:]
    assert [row[0].strip("| ") for row in rows] == ["softmax causal", "linear elu causal"]
    assert rows[1][-1].strip(" |") == f"{6 * (256 + 128) * 4 / 1e6 * 1e3:.2f}"


def test_timed_drops_the_leaves_gradients_before_each_call():
    """A timed backward stores its gradients, as after zero_grad(set_to_none=True), instead of adding
    them to the previous call's: after a warm-up and 3 repeats x.grad is one call's gradient."""
    bench = load_bench()
    x = torch.ones(3, requires_grad=True)
    bench.timed(lambda: 2 * x, "cpu", 3, True, (x,))
    assert torch.equal(x.grad, torch.full((3,), 2.0))


def test_cpu_preset_prints_every_goal_row_and_json(capsys, tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(str(BENCH.parent))
    bench = load_bench()
    out = tmp_path / "goals.json"
    bench.main(["--preset", "cpu", "--seq-lens", "32", "--linear-seq-lens", "64", "--head-dims", "8",
                "--repeats", "1", "--memory-seq-len", "4096", "--json", str(out)])
    printed = capsys.readouterr().out
    rows = [line for line in printed.splitlines() if line.startswith("| ") and "---" not in line]
    cases = [row.split(" | ")[0].strip("| ") for row in rows[1:]]
    assert "softmax" in cases and "linear elu non-causal" in cases and "linear identity causal, unnormalised" in cases
    import json

    data = json.loads(out.read_text())
    assert len(data["rows"]) == len(cases) and all(r["ratio_both"] > 0 for r in data["rows"])
    assert data["cpu_isa"] == actattn.cpu_isa()
    # Peak memory: eight 1 x 8 x 4096 x 8 float32 tensors are 8 MiB; the line and the JSON agree.
    memory = data["peak_memory"]
    assert memory["n"] == 4096 and memory["necessary_mib"] == 8.0
    assert f"peak memory, linear elu causal fwd+bwd, D=8 N=4096: q, k, v, the output and their gradients 8 MiB" \
        in printed
    if memory["ratio"] is not None:
        assert memory["peak_mib"] >= 4 and f"ratio {memory['ratio']:.2f}" in printed
    has_fast_transformers = importlib.util.find_spec("fast_transformers") is not None
    assert ("fast-transformers causal product" in printed) or not has_fast_transformers
    assert ("fast-transformers does not import here" in printed) != ("fast-transformers causal product" in printed)


def test_cpu_preset_keeps_only_the_cases_asked_for(capsys, monkeypatch):
    monkeypatch.syspath_prepend(str(BENCH.parent))
    bench = load_bench()
    bench.main(["--preset", "cpu", "--seq-lens", "32", "--linear-seq-lens", "--head-dims", "8", "--repeats", "1",
                "--memory-seq-len", "0", "--cases", "softmax causal", "linear elu non"])
    rows = [line for line in capsys.readouterr().out.splitlines() if line.startswith("| ") and "---" not in line]
    assert [row.split(" | ")[0].strip("| ") for row in rows[1:]] == ["softmax causal", "linear elu non-causal"]


def test_scaling_prints_every_op_finds_the_crossover_and_plots(tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(str(BENCH.parent))
    spec = importlib.util.spec_from_file_location("scaling", BENCH.parent / "scaling.py")
    scaling = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(scaling)
    lines = []
    result = scaling.main(["--seq-lens", "16", "32", "64", "--quadratic-max", "32", "--head-dim", "8",
                           "--repeats", "1", "--json", str(tmp_path / "s.json"), "--plot", str(tmp_path / "s.png")],
                          out=lines.append)
    table = [line for line in lines if line.startswith("| ") and "---" not in line]
    assert len(table) == 4 and table[-1].count("—") == 3  # N = 64: the quadratic ops stopped at 32
    assert (tmp_path / "s.png").stat().st_size > 0 and (tmp_path / "s.json").exists()
    times = {"lin": {1: 5.0, 2: 1.0, 4: 2.0, 8: 3.0}, "quad": {1: 1.0, 2: 2.0, 4: 1.0, 8: 9.0}}
    assert scaling.crossover(times, "lin", "quad") == 8  # faster at 2, slower again at 4: from 8 on
    assert set(result["crossover_n"]) == {"actattn softmax causal", "torch SDPA causal"}


def test_kernel_times_lists_the_ops_of_each_case(capsys):
    spec = importlib.util.spec_from_file_location("kernel_times", BENCH.parent / "kernel_times.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    module.main(["--device", "cpu", "--dtype", "float32", "--batch", "1", "--heads", "2",
                 "--cases", "linear relu causal 8 32", "sigmoid 8 16"])
    printed = capsys.readouterr().out
    assert "### linear relu causal 8 32" in printed and "### sigmoid 8 16" in printed
    assert "`actattn::_linear_attention_backward` | 1 |" in printed
    assert "`actattn::_attention_forward` | 1 |" in printed
