"""Crash-safe training checkpoints: atomic replacement, a kept previous copy, a checksum, safe loading.

A checkpoint file is one header line, ``actattn-checkpoint 1 <sha256 of the rest>``, followed by what
``torch.save`` writes. :func:`save` writes it to a temporary file in the same folder, flushes and fsyncs
it, then renames the current checkpoint to ``<name>.prev`` and the new file over ``<name>`` (renames
within a folder are atomic), so a kill at any moment leaves at least one complete checkpoint.
:func:`load` verifies the checksum and unpickles with ``weights_only=True`` (a checkpoint cannot run
code), tries ``<name>`` then ``<name>.prev``, and says which file was damaged and why instead of
raising.
"""

from __future__ import annotations

import hashlib
import io
import os
import sys
from pathlib import Path
from typing import Any, Optional

import torch

MAGIC = b"actattn-checkpoint 1 "


class DamagedCheckpoint(Exception):
    """A checkpoint file that is truncated, altered, not ours, or holds more than tensors and containers."""


def previous_path(path: Path) -> Path:
    return path.with_name(path.name + ".prev")


def _serialize(state: Any) -> bytes:
    buffer = io.BytesIO()
    torch.save(state, buffer)
    payload = buffer.getvalue()
    return MAGIC + hashlib.sha256(payload).hexdigest().encode() + b"\n" + payload


def _write_file(path: Path, data: bytes) -> None:
    with open(path, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())


def _fsync_folder(folder: Path) -> None:
    """Makes the renames themselves durable (a no-op where folders cannot be opened, as on Windows)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def save(state: Any, path: Path) -> None:
    """Writes ``state`` to ``path`` so that a kill at any point leaves a complete checkpoint behind."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    for stale in path.parent.glob(f"{path.name}.tmp*"):  # left by a process killed while writing
        stale.unlink(missing_ok=True)
    temporary = path.with_name(f"{path.name}.tmp{os.getpid()}")
    _write_file(temporary, _serialize(state))
    if path.exists():
        os.replace(path, previous_path(path))
    os.replace(temporary, path)
    _fsync_folder(path.parent)


def read(path: Path, map_location=None) -> Any:
    """The state in one checkpoint file; raises DamagedCheckpoint saying what is wrong with it."""
    data = Path(path).read_bytes()
    header, newline, payload = data.partition(b"\n")
    if not header.startswith(MAGIC) or not newline:
        raise DamagedCheckpoint("not an actattn checkpoint (no header line; truncated, or written by another tool)")
    expected = header[len(MAGIC):].decode(errors="replace")
    actual = hashlib.sha256(payload).hexdigest()
    if actual != expected:
        raise DamagedCheckpoint(f"checksum mismatch (sha256 {actual[:12]}..., header says {expected[:12]}...): "
                                "the file was truncated or altered")
    try:
        return torch.load(io.BytesIO(payload), map_location=map_location, weights_only=True)
    except Exception as error:  # the unpickler's errors have no common base class
        raise DamagedCheckpoint(f"refused by the safe loader (weights_only=True): {error}") from error


def load(path: Path, map_location=None, log=None) -> Optional[Any]:
    """The newest intact state among ``path`` and ``path.prev``, or None if neither is usable.

    Every file that exists but cannot be used is reported through ``log`` (default: stderr) with its
    name and the reason.
    """
    log = log or (lambda message: print(message, file=sys.stderr))
    path = Path(path)
    for candidate in (path, previous_path(path)):
        if not candidate.exists():
            continue
        try:
            state = read(candidate, map_location)
        except (DamagedCheckpoint, OSError) as error:
            log(f"actattn: checkpoint {candidate} is unusable: {error}")
            continue
        if candidate != path:
            log(f"actattn: resuming from the previous checkpoint {candidate}")
        return state
    return None
