"""The comparison report's statistics: spread over seeds, pooled step times, separation from softmax."""

import pytest

from actattn import report


def run(kind, seed, loss, step_ms=(100.0, 10.0, 11.0, 12.0), memory=5.0, load=0.5):
    return {"kind": kind, "seed": seed, "final_loss": loss, "final_accuracy": None,
            "grad_norm_first_over_last_layer": 2.0 * loss, "load_average": load, "peak_memory_mib": memory,
            "history": {"step_ms": list(step_ms)}}


def test_spread_is_mean_std_min_max_of_the_known_values():
    assert report.spread([1.0, 2.0, None, 3.0]) == {"mean": 2.0, "std": 1.0, "min": 1.0, "max": 3.0}
    assert report.spread([4.0]) == {"mean": 4.0, "std": 0.0, "min": 4.0, "max": 4.0}
    assert report.spread([None, None]) is None


def test_step_times_leave_out_warm_up_and_report_their_spread():
    times = [500.0] + [10.0 + i % 5 for i in range(99)]  # a slow first step, then 10-14 ms
    steady = report.steady_steps(times)
    assert 500.0 not in steady and len(steady) == 90
    summary = report.step_time_summary(steady)
    assert summary["ms_per_step"] == 12.0
    assert 10.0 <= summary["ms_per_step_p10"] < summary["ms_per_step_p90"] <= 14.0
    assert report.step_time_summary(report.steady_steps([7.0]))["ms_per_step"] == 7.0
    assert report.step_time_summary([])["ms_per_step"] is None


def test_summary_per_kind_pools_seeds():
    runs = [run("softmax", 0, 2.0, memory=5.0, load=0.2), run("softmax", 1, 2.2, memory=7.0, load=3.0),
            run("relu", 0, 2.5, memory=None), run("relu", 1, 2.6, memory=None)]
    softmax, relu = report.summarize_kinds(runs, "final_accuracy")
    assert softmax["seeds"] == [0, 1]
    assert softmax["final_loss"]["mean"] == pytest.approx(2.1)
    assert softmax["grad_norm_first_over_last_layer"]["max"] == pytest.approx(4.4)
    assert softmax["final_accuracy"] is None
    assert softmax["ms_per_step"] == 11.0, "the 100 ms warm-up step of each seed is left out"
    assert (softmax["load_average"], softmax["peak_memory_mib"]) == (3.0, 7.0), "the worst seed"
    assert relu["peak_memory_mib"] is None
    assert report._separated([softmax, relu], "final_loss") == ["relu"]
    overlapping = report.summarize_kinds([*runs[:2], run("relu", 0, 2.1), run("relu", 1, 2.5)], "final_accuracy")
    assert report._separated(overlapping, "final_loss") == []


def test_mean_and_range_cell():
    assert report._mean_range({"mean": 2.0, "std": 0.1, "min": 1.9, "max": 2.1}, "{:.2f}") == "2.00 (1.90–2.10)"
    assert report._mean_range({"mean": 2.0, "std": 0.0, "min": 2.0, "max": 2.0}, "{:.2f}") == "2.00"
    assert report._mean_range(None, "{:.2f}") == "n/a"
