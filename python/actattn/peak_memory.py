"""Peak memory a block of code adds to what was in use when it started, on CPU and CUDA.

A running maximum (``ru_maxrss``) only grows over a process's life, so the second thing measured in
one process inherits the first one's peak. This resets the peak at the start of each block instead:

- CUDA: the caching allocator's statistics (``reset_peak_memory_stats``, ``max_memory_allocated``),
  i.e. bytes held by live tensors, not the allocator's cache.
- CPU on Linux: the kernel's resident-set high-water mark ``VmHWM``, reset by writing ``5`` to
  ``/proc/self/clear_refs`` after ``malloc_trim`` has returned freed heap pages (torch's CPU allocator
  does not cache, so freed tensors leave the resident set). It counts every page the process touches,
  so a block that first touches code or libraries pays for them: warm up before measuring.
- Elsewhere the measurement is ``None`` and reports say "n/a".
"""

from __future__ import annotations

import ctypes
import ctypes.util
import gc
import re
from pathlib import Path
from typing import Optional

import torch

_STATUS = Path("/proc/self/status")
_CLEAR_REFS = Path("/proc/self/clear_refs")


def _status_mib(key: str) -> float:
    return int(re.search(rf"^{key}:\s+(\d+) kB", _STATUS.read_text(), re.MULTILINE).group(1)) / 1024


def _trim_heap() -> None:
    libc_name = ctypes.util.find_library("c")
    if libc_name:
        libc = ctypes.CDLL(libc_name)
        if hasattr(libc, "malloc_trim"):  # glibc only
            libc.malloc_trim(0)


def _cpu_peak_supported() -> bool:
    try:
        return _STATUS.exists() and _CLEAR_REFS.exists() and "VmHWM" in _STATUS.read_text()
    except OSError:
        return False


class PeakMemory:
    """``with PeakMemory(device) as peak: ...`` then ``peak.mib``: the most memory, in MiB, the block
    held at once above what was in use when it started (``None`` where it cannot be measured).
    ``start()`` and ``stop()`` do the same for a span that is not one block."""

    def __init__(self, device) -> None:
        self.device = torch.device(device)
        self.mib: Optional[float] = None
        self._start: Optional[float] = None

    def __enter__(self) -> "PeakMemory":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def start(self) -> "PeakMemory":
        gc.collect()
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
            self._start = torch.cuda.memory_allocated(self.device) / 2**20
        elif self.device.type == "cpu" and _cpu_peak_supported():
            _trim_heap()
            try:
                _CLEAR_REFS.write_text("5")  # resets VmHWM to the current resident set
            except OSError:
                return self
            self._start = _status_mib("VmRSS")
        return self

    def stop(self) -> None:
        if self._start is None:
            return
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            peak = torch.cuda.max_memory_allocated(self.device) / 2**20
        else:
            peak = _status_mib("VmHWM")
        self.mib = max(0.0, peak - self._start)
