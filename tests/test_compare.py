"""The comparison trainer: report and plots, exact resume, and data-parallel equivalence."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from actattn import compare

TINY = ["--quick", "--steps", "8", "--eval-every", "4", "--record-every", "4", "--no-progress"]


def run(tmp_path, *extra):
    return compare.main([*TINY, "--out", str(tmp_path), *extra])


def test_quick_run_writes_report_and_plots(tmp_path):
    results = run(tmp_path, "--kinds", "softmax", "linear-elu", "--checkpoint-every", "100")
    assert [r["kind"] for r in results] == ["softmax", "linear-elu"]
    report = (tmp_path / "report.md").read_text()
    assert "| softmax |" in report and "| linear-elu |" in report
    data = json.loads((tmp_path / "report.json").read_text())
    assert len(data["results"][0]["history"]["loss"]) == 8
    assert "## Depth sweep at initialisation" in report
    for name in ("loss.png", "metric.png", "grad_norm_per_layer.png", "grad_norm_over_steps.png", "depth_sweep.png"):
        assert (tmp_path / name).stat().st_size > 1000, name
    assert all(r["history"]["gradflow"] for r in results)


def test_text_task_runs(tmp_path):
    text = tmp_path / "corpus.txt"
    text.write_text("the quick brown fox jumps over the lazy dog. " * 50)
    (result,) = run(tmp_path, "--task", "text", "--text", str(text), "--kinds", "relu")
    assert result["final_bits_per_byte"] > 0


def test_resume_equals_uninterrupted(tmp_path):
    whole = run(tmp_path / "whole", "--kinds", "sigmoid", "--checkpoint-every", "4")
    run(tmp_path / "pieces", "--kinds", "sigmoid", "--checkpoint-every", "4", "--steps", "4")
    resumed = run(tmp_path / "pieces", "--kinds", "sigmoid", "--checkpoint-every", "4", "--resume")
    assert resumed[0]["history"]["loss"] == whole[0]["history"]["loss"]  # bit-identical
    assert resumed[0]["history"]["eval"] == whole[0]["history"]["eval"]


def test_two_process_ddp_matches_one_process(tmp_path):
    single = run(tmp_path / "single", "--kinds", "linear-relu", "--batch-size", "8")
    package_root = str(Path(compare.__file__).parents[1])
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([package_root, os.environ.get("PYTHONPATH", "")]))
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--master_port=29517",
               "-m", "actattn.compare", *TINY, "--kinds", "linear-relu", "--batch-size", "8",
               "--out", str(tmp_path / "ddp")]
    subprocess.run(command, check=True, env=env, timeout=240, capture_output=True)
    ddp = json.loads((tmp_path / "ddp" / "report.json").read_text())["results"][0]
    for a, b in zip(ddp["history"]["loss"], single[0]["history"]["loss"]):
        assert abs(a - b) <= 1e-5 * max(1.0, abs(b))


def test_help_describes_every_option_with_its_default(capsys):
    with pytest.raises(SystemExit):
        compare.parse_args(["--help"])
    text = " ".join(capsys.readouterr().out.split())
    options = [a for a in text.split() if a.startswith("--") and a != "--help"]
    assert len(set(options)) >= 20
    for option in ("--steps", "--lr", "--seed", "--sweep-depths", "--checkpoint-every", "--kinds", "--out"):
        described = text.split(option, 2)[-1].split(" --")[0]  # the option's own line, after its metavar
        assert "default" in described, f"{option}: {described}"
    assert "(default: 600; with --quick 30)" in text


def test_report_says_the_command_that_made_it(tmp_path):
    compare.main(["--quick", "--kinds", "softmax", "--sweep-depths", "--checkpoint-every", "0",
                  "--no-progress", "--out", str(tmp_path)])
    report = (tmp_path / "report.md").read_text()
    assert f"Made by `python -m actattn.compare --quick --kinds softmax --sweep-depths --checkpoint-every 0 " \
           f"--no-progress --out {tmp_path}`" in report
    assert not list(tmp_path.glob("checkpoints/*")), "--checkpoint-every 0 writes no checkpoint"


def test_step_time_leaves_out_warm_up_and_reports_its_spread():
    times = [500.0] + [10.0 + i % 5 for i in range(99)]  # a slow first step, then 10-14 ms
    summary = compare.step_time_summary(times)
    assert summary["ms_per_step"] == 12.0
    assert 10.0 <= summary["ms_per_step_p10"] < summary["ms_per_step_p90"] <= 14.0
    assert compare.step_time_summary([7.0])["ms_per_step"] == 7.0
