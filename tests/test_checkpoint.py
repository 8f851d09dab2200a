"""Checkpoints survive a kill at any point of a write, refuse to run code, and damaged ones are reported
and skipped, never a traceback."""

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from actattn import checkpoint, compare

TINY = ["--quick", "--steps", "8", "--eval-every", "4", "--record-every", "4", "--no-progress", "--cost-lengths",
        "--sweep-depths", "--kinds", "sigmoid", "--checkpoint-every", "4"]
PACKAGE_ROOT = str(Path(compare.__file__).parents[1])


def state():
    return {"model": {"w": torch.arange(6.0).view(2, 3)}, "history": {"loss": [1.5, 1.25]}, "step": 2}


def test_round_trip_and_previous_copy(tmp_path):
    path = tmp_path / "kind.pt"
    checkpoint.save(state(), path)
    second = dict(state(), step=3)
    checkpoint.save(second, path)
    assert checkpoint.read(path)["step"] == 3
    assert checkpoint.read(checkpoint.previous_path(path))["step"] == 2
    assert torch.equal(checkpoint.load(path)["model"]["w"], state()["model"]["w"])
    assert not list(tmp_path.glob("*.tmp*"))


def flip_bytes(path, count=64):
    data = bytearray(path.read_bytes())
    for i in range(count):
        data[len(data) // 2 + i] ^= 0xFF
    path.write_bytes(bytes(data))


@pytest.mark.parametrize("damage", ["flipped", "truncated", "foreign"])
def test_a_damaged_checkpoint_is_reported_and_the_previous_one_used(tmp_path, damage):
    path = tmp_path / "kind.pt"
    checkpoint.save(state(), path)
    checkpoint.save(dict(state(), step=3), path)
    if damage == "flipped":  # in the tensor data: torch's own zip reader would not notice
        flip_bytes(path)
    elif damage == "truncated":
        path.write_bytes(path.read_bytes()[:100])
    else:
        torch.save(dict(state(), step=3), path)  # a plain torch.save file: no header, no checksum
    messages = []
    loaded = checkpoint.load(path, log=messages.append)
    assert loaded["step"] == 2
    assert str(path) in messages[0] and "unusable" in messages[0]
    assert "previous checkpoint" in messages[1]


def test_no_intact_checkpoint_gives_none(tmp_path):
    path = tmp_path / "kind.pt"
    path.write_bytes(b"actattn-checkpoint 1 0000\nnot a zip")
    messages = []
    assert checkpoint.load(path, log=messages.append) is None
    assert "checksum mismatch" in messages[0]


class RunsAShellCommand:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


def test_a_checkpoint_cannot_run_code(tmp_path):
    # A crafted file with a valid header and checksum: only the safe unpickler stands in the way.
    marker = tmp_path / "pwned"
    path = tmp_path / "kind.pt"
    path.write_bytes(checkpoint._serialize({"model": RunsAShellCommand(marker)}))
    messages = []
    assert checkpoint.load(path, log=messages.append) is None
    assert not marker.exists()
    assert "weights_only=True" in messages[0]


# Runs the trainer in a child process and SIGKILLs it at one point of the second checkpoint's write
# (the first, at step 4, completes): mid-write, after the write but before any rename, between the two
# renames.
KILLER = textwrap.dedent("""
    import os, signal, sys
    from actattn import checkpoint, compare

    point, saves = sys.argv[1], [0]
    real_save, real_write, real_replace = checkpoint.save, checkpoint._write_file, os.replace

    def die():
        os.kill(os.getpid(), signal.SIGKILL)

    def save(state, path):
        saves[0] += 1
        real_save(state, path)

    def write_file(path, data):
        if saves[0] == 2 and point == "mid-write":
            with open(path, "wb") as f:
                f.write(data[: len(data) // 2])
            die()
        real_write(path, data)

    replaces = [0]
    def replace(src, dst):
        if saves[0] == 2:
            replaces[0] += 1
            if (point, replaces[0]) in (("before-renames", 1), ("between-renames", 2)):
                die()
        real_replace(src, dst)

    checkpoint.save, checkpoint._write_file, os.replace = save, write_file, replace
    compare.main(sys.argv[2:])
""")


@pytest.mark.parametrize("point", ["mid-write", "before-renames", "between-renames"])
def test_killed_during_a_checkpoint_write_resumes_with_nothing_lost(tmp_path, point, capsys):
    whole = compare.main([*TINY, "--out", str(tmp_path / "whole")])
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([PACKAGE_ROOT, os.environ.get("PYTHONPATH", "")]))
    killed = subprocess.run([sys.executable, "-c", KILLER, point, *TINY, "--out", str(tmp_path / "killed")],
                            env=env, timeout=240, capture_output=True)
    assert killed.returncode == -9, killed.stderr.decode()[-2000:]
    capsys.readouterr()
    resumed = compare.main([*TINY, "--out", str(tmp_path / "killed"), "--resume"])
    assert "Traceback" not in capsys.readouterr().err
    assert resumed[0]["history"]["loss"] == whole[0]["history"]["loss"]
    assert resumed[0]["history"]["eval"] == whole[0]["history"]["eval"]
    report = json.loads((tmp_path / "killed" / "report.json").read_text())
    assert len(report["runs"][0]["history"]["loss"]) == 8
