"""The comparison trainer: report and plots, seeds, presets, exact resume, and data-parallel equivalence."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from actattn import compare

# No cost measurement unless a test asks for one: it is tested in test_cost.py.
TINY = ["--quick", "--steps", "8", "--eval-every", "4", "--record-every", "4", "--no-progress", "--cost-lengths"]


def run(tmp_path, *extra):
    return compare.main([*TINY, "--out", str(tmp_path), *extra])


def test_quick_run_writes_report_and_plots(tmp_path):
    results = run(tmp_path, "--kinds", "softmax", "linear-elu", "--checkpoint-every", "100", "--cost-lengths", "64",
                  "128")
    assert [(r["kind"], r["seed"]) for r in results] == [("softmax", 0), ("linear-elu", 0)]
    report = (tmp_path / "report.md").read_text()
    assert "| softmax |" in report and "| linear-elu |" in report
    data = json.loads((tmp_path / "report.json").read_text())
    assert len(data["runs"][0]["history"]["loss"]) == 8
    assert [row["kind"] for row in data["summary"]] == ["softmax", "linear-elu"]
    for section in ("## Training", "## Cost against sequence length", "## Depth sweep at initialisation"):
        assert section in report
    figures = ("loss.png", "metric.png", "grad_norm_per_layer.png", "grad_norm_over_steps.png",
               "token_similarity_per_layer.png", "cost_vs_length.png", "depth_sweep.png", "rank_collapse.png")
    for name in figures:
        assert (tmp_path / name).stat().st_size > 1000, name
        assert f"({name})" in report, f"the report shows {name}"
    assert all(r["history"]["gradflow"] for r in results)
    assert all(r["peak_memory_mib"] is not None for r in results) or not Path("/proc/self/clear_refs").exists()


def test_seeds_give_a_spread_and_the_same_start_to_every_kind(tmp_path, monkeypatch):
    initial, batches = [], []
    real_model, real_task = compare.DecoderLM, compare.make_task

    def recording_model(*args, **kwargs):
        model = real_model(*args, **kwargs)
        initial.append(torch.cat([p.detach().flatten() for p in model.parameters()]))
        return model

    def recording_task(args, seed):
        task = real_task(args, seed)
        batches.append(task.batch(0, 4)[0])
        return task

    monkeypatch.setattr(compare, "DecoderLM", recording_model)
    monkeypatch.setattr(compare, "make_task", recording_task)
    results = run(tmp_path, "--kinds", "softmax", "relu", "--seeds", "2", "--seed", "5", "--sweep-depths")
    assert [(r["kind"], r["seed"]) for r in results] == [("softmax", 5), ("softmax", 6), ("relu", 5), ("relu", 6)]
    # One seed: the same initial weights for every kind; another seed: other weights and other batches.
    assert torch.equal(initial[0], initial[2]) and torch.equal(initial[1], initial[3])
    assert not torch.equal(initial[0], initial[1])
    assert len(batches) == 2 and not torch.equal(batches[0], batches[1])
    softmax5, softmax6 = results[:2]
    summary = json.loads((tmp_path / "report.json").read_text())["summary"]
    losses = [softmax5["final_loss"], softmax6["final_loss"]]
    assert losses[0] != losses[1]
    assert summary[0]["final_loss"]["min"] == min(losses) and summary[0]["final_loss"]["max"] == max(losses)
    assert summary[0]["seeds"] == [5, 6]
    report = (tmp_path / "report.md").read_text()
    assert f"| softmax | {sum(losses) / 2:.3f} ({min(losses):.3f}–{max(losses):.3f}) |" in report
    assert "seeds 5, 6" in report and "does not overlap softmax's" in report
    assert "## Cost against sequence length" not in report and "## Depth sweep" not in report


def test_gpu_preset_says_it_needs_cuda():
    if torch.cuda.is_available():
        pytest.skip("CUDA is present: the preset runs")
    with pytest.raises(SystemExit):
        compare.parse_args(["--preset", "gpu"])
    with pytest.raises(SystemExit):
        compare.parse_args(["--seeds", "0"])


def test_presets_fill_what_the_command_line_leaves_open():
    args = compare.parse_args(["--quick", "--steps", "3"])
    assert (args.preset, args.steps, args.seeds, args.device) == ("quick", 3, 1, "cpu")
    args = compare.parse_args([])
    assert (args.seeds, args.cost_lengths[0], args.cost_lengths[-1]) == (3, 32, 16384)


def test_text_task_runs(tmp_path):
    text = tmp_path / "corpus.txt"
    text.write_text("the quick brown fox jumps over the lazy dog. " * 50)
    (result,) = run(tmp_path, "--task", "text", "--text", str(text), "--kinds", "relu")
    assert result["final_bits_per_byte"] > 0


def test_resume_equals_uninterrupted(tmp_path):
    whole = run(tmp_path / "whole", "--kinds", "sigmoid", "--checkpoint-every", "4")
    run(tmp_path / "pieces", "--kinds", "sigmoid", "--checkpoint-every", "4", "--steps", "4")
    resumed = run(tmp_path / "pieces", "--kinds", "sigmoid", "--checkpoint-every", "4", "--resume")
    assert (tmp_path / "pieces" / "checkpoints" / "sigmoid-seed0.pt").exists()
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
    ddp = json.loads((tmp_path / "ddp" / "report.json").read_text())["runs"][0]
    for a, b in zip(ddp["history"]["loss"], single[0]["history"]["loss"]):
        assert abs(a - b) <= 1e-5 * max(1.0, abs(b))


def test_help_describes_every_option_with_its_default(capsys):
    parser = compare.build_parser()
    formatter = parser._get_formatter()
    options = [action for action in parser._actions if action.dest != "help"]
    assert len(options) >= 24
    for action in options:
        assert "default" in formatter._expand_help(action), action.option_strings
    with pytest.raises(SystemExit):
        compare.parse_args(["--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "(default: 300; preset quick 30; gpu 3000)" in text
    assert "--preset" in text and "--seeds" in text and "--cost-lengths" in text


def test_report_says_the_command_that_made_it(tmp_path):
    compare.main(["--quick", "--kinds", "softmax", "--sweep-depths", "--checkpoint-every", "0",
                  "--no-progress", "--out", str(tmp_path)])
    report = (tmp_path / "report.md").read_text()
    assert f"Made by `python -m actattn.compare --quick --kinds softmax --sweep-depths --checkpoint-every 0 " \
           f"--no-progress --out {tmp_path}`" in report
    assert not list(tmp_path.glob("checkpoints/*")), "--checkpoint-every 0 writes no checkpoint"


def test_missing_extra_names_the_install_command(monkeypatch):
    real = compare.importlib.util.find_spec
    monkeypatch.setattr(compare.importlib.util, "find_spec", lambda name: None if name == "tqdm" else real(name))
    with pytest.raises(SystemExit, match=r"needs tqdm.*pip install 'actattn\[compare\]'"):
        compare.main(["--quick"])


def test_console_script_exits_zero(tmp_path, monkeypatch):
    # A console script passes its function's return value to sys.exit: anything but None is a failure.
    monkeypatch.setattr(sys, "argv", ["actattn-compare", *TINY, "--steps", "2", "--kinds", "softmax",
                                      "--sweep-depths", "--out", str(tmp_path)])
    assert compare.cli() is None
    assert (tmp_path / "report.md").exists()
