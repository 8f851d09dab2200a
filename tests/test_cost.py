"""Cost against sequence length, its crossover, the peak-memory meter, and log plots that show zeros."""

from pathlib import Path

import pytest
import torch

from actattn import cost, plots
from actattn.gradflow import plot_layer_norms
from actattn.peak_memory import PeakMemory

LINUX_PEAK = Path("/proc/self/clear_refs").exists()


@pytest.mark.skipif(not LINUX_PEAK, reason="the CPU meter needs Linux's /proc/self/clear_refs")
def test_peak_memory_is_per_block_not_a_running_maximum():
    with PeakMemory("cpu") as big:
        x = torch.ones(16 * 2**20)  # 64 MiB, touched
        del x
    with PeakMemory("cpu") as small:
        y = torch.ones(2 * 2**20)  # 8 MiB
        del y
    assert 60 <= big.mib <= 80
    assert 6 <= small.mib <= 16, "the second block does not inherit the first one's peak"


def test_peak_memory_without_a_meter_is_none(monkeypatch):
    monkeypatch.setattr("actattn.peak_memory._cpu_peak_supported", lambda: False)
    with PeakMemory("cpu") as peak:
        torch.ones(1000)
    assert peak.mib is None


def test_cost_rows_cover_every_kind_and_length(tmp_path):
    rows = cost.cost_against_length(["softmax", "linear-elu"], [32, 64], heads=2, head_dim=8, min_run_time=0.01)
    assert [(r["kind"], r["n"]) for r in rows] == [("softmax", 32), ("softmax", 64), ("linear-elu", 32),
                                                   ("linear-elu", 64)]
    for r in rows:
        assert 0 < r["ms_p25"] <= r["ms"] <= r["ms_p75"]
        assert (r["memory_mib"] is not None) == LINUX_PEAK
    cost.plot_cost(rows, str(tmp_path / "cost.png"))
    assert (tmp_path / "cost.png").stat().st_size > 1000


def test_a_kind_stops_at_the_first_length_over_the_time_limit():
    rows = cost.cost_against_length(["relu"], [16, 32, 64], heads=1, head_dim=4, min_run_time=0.01,
                                    max_seconds=0.0)
    assert [r["n"] for r in rows] == [16]


def rows(kind, times):
    return [{"kind": kind, "n": n, "ms": t, "memory_mib": None} for n, t in times.items()]


def test_crossover_interpolates_in_log_log():
    # linear costs 4x softmax at N=256 and 1/4 at N=1024: ratios 4 and 1/4 are symmetric in log,
    # so the crossing lies half-way in log N, at 512.
    data = rows("softmax", {256: 1.0, 1024: 4.0}) + rows("linear-elu", {256: 4.0, 1024: 1.0})
    where = cost.crossover(data, "linear-elu", "softmax")
    assert where["n"] == pytest.approx(512.0)
    assert (where["above"], where["below"]) == (256, 1024)


def test_crossover_at_the_ends():
    cheaper = rows("softmax", {64: 2.0, 128: 4.0}) + rows("linear-elu", {64: 1.0, 128: 1.0})
    assert cost.crossover(cheaper, "linear-elu", "softmax") == {"n": 64, "below": 64, "above": None}
    dearer = rows("softmax", {64: 1.0, 128: 1.0}) + rows("linear-elu", {64: 2.0, 128: 0.5})
    assert cost.crossover(dearer, "linear-elu", "softmax")["below"] == 128
    back_up = rows("softmax", {64: 1.0, 128: 1.0}) + rows("linear-elu", {64: 0.5, 128: 2.0})
    assert cost.crossover(back_up, "linear-elu", "softmax")["n"] is None, "cheaper, then not: no crossover"
    assert cost.crossover(rows("softmax", {64: 1.0}), "linear-elu", "softmax")["n"] is None


def test_log_line_marks_zeros_on_the_bottom_edge():
    plt = plots.pyplot()
    fig, ax = plt.subplots()
    plots.log_line(ax, [1, 2, 3], [1.0, 0.0, 0.5], label="relu")
    ax.set_yscale("log")
    lines = ax.get_lines()
    assert list(lines[1].get_xdata()) == [2], "the zero is drawn, on its own"
    labels = [t.get_text() for t in ax.legend().get_texts()]
    assert plots.ZERO_NOTE in labels and "relu" in labels
    plt.close(fig)


def test_layer_norm_plot_takes_records_per_seed(tmp_path):
    def records(scale):
        return [{"step": s, "layers": {"a": {"param_grad_norm": scale}, "b": {"param_grad_norm": 0.0}}}
                for s in range(2)]

    plot_layer_norms({"relu": [records(1.0), records(2.0)], "softmax": records(1.5)}, str(tmp_path / "p.png"))
    assert (tmp_path / "p.png").stat().st_size > 1000


@pytest.mark.skipif(not LINUX_PEAK, reason="the CPU meter needs Linux's /proc/self/clear_refs")
def test_no_kind_holds_an_n_by_n_matrix():
    # At N=2048 with 2 heads an N×N float32 score matrix would be 32 MiB; the output and the three input
    # gradients every kind must allocate are 1 MiB.
    rows = cost.cost_against_length(["softmax", "relu", "linear-elu"], [2048], heads=2, head_dim=16,
                                    min_run_time=0.01)
    for r in rows:
        assert r["floor_mib"] == pytest.approx(1.0)
        assert 0.9 * r["floor_mib"] <= r["memory_mib"] <= 2 * r["floor_mib"] + 1, r
