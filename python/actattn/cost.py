"""Cost against sequence length: the time and peak memory of one causal attention layer's forward and
backward per attention kind, and where the linear kinds overtake the quadratic ones.

This answers the seed question's other half, "do we get O(N) back?", with measurements made in the
same run as the training comparison. Each point times ``out = kind(q, k, v, causal=True);
out.backward(grad)`` on (1, heads, N, head_dim) inputs with ``torch.utils.benchmark`` (warm-up, then
repeated blocks for at least ``min_run_time`` seconds; median and quartiles over the blocks), and
measures, in a separate first call, the peak memory the call adds on top of q, k, v and the output
gradient (:class:`actattn.peak_memory.PeakMemory`: allocator statistics on CUDA, the resident-set
high-water mark reset per point on Linux CPUs). Every kind must at least allocate its output and the
gradients of q, k and v: each row carries that floor, so a kind's own overhead reads as the excess.
"""

from __future__ import annotations

import math
import statistics
import time
from typing import Dict, List, Optional, Sequence

import torch
from torch.utils import benchmark

from .nn.kinds import get_kind
from .peak_memory import PeakMemory
from .plots import line_style, log_line, pyplot


def cost_against_length(kinds: Sequence[str], lengths: Sequence[int], heads: int, head_dim: int,
                        device: str = "cpu", min_run_time: float = 0.3, max_seconds: float = 20.0,
                        seed: int = 0) -> List[Dict]:
    """One row per (kind, N): ``ms`` (median), ``ms_p25``/``ms_p75`` (quartiles over the timed blocks),
    ``memory_mib`` and ``floor_mib`` (output + q, k, v gradients, float32). A kind's longer lengths are skipped once one point's first call took more than
    ``max_seconds`` (quadratic kinds on a CPU at large N); they are then absent from the rows."""
    rows = []
    lengths = sorted(lengths)
    for kind_name in kinds:
        kind = get_kind(kind_name)
        _forward_backward(kind, *_inputs(lengths[0], heads, head_dim, device, seed))  # first-call costs
        for n in lengths:
            inputs = _inputs(n, heads, head_dim, device, seed)
            started = time.perf_counter()
            with PeakMemory(device) as peak:
                _forward_backward(kind, *inputs)
            first_call_s = time.perf_counter() - started
            timer = benchmark.Timer(stmt="step()", globals={"step": lambda: _forward_backward(kind, *inputs)},
                                    num_threads=torch.get_num_threads())
            times = timer.blocked_autorange(min_run_time=min_run_time).times
            p25, median, p75 = statistics.quantiles(times, n=4, method="inclusive") if len(times) > 1 else times * 3
            rows.append({"kind": kind_name, "n": n, "ms": 1e3 * median, "ms_p25": 1e3 * p25, "ms_p75": 1e3 * p75,
                         "memory_mib": peak.mib, "floor_mib": 4 * inputs[0].numel() * 4 / 2**20})
            if first_call_s > max_seconds:
                break
    return rows


def _inputs(n: int, heads: int, head_dim: int, device: str, seed: int):
    generator = torch.Generator().manual_seed(seed)
    q, k, v, grad = (torch.randn(1, heads, n, head_dim, generator=generator).to(device) for _ in range(4))
    return q.requires_grad_(), k.requires_grad_(), v.requires_grad_(), grad


def _forward_backward(kind, q, k, v, grad) -> None:
    for t in (q, k, v):
        t.grad = None  # a fresh gradient each call: accumulating would time an extra addition
    kind(q, k, v, True, None).backward(grad)


def crossover(rows: List[Dict], kind: str, versus: str, key: str = "ms") -> Dict:
    """Where ``kind`` becomes cheaper than ``versus`` in ``key`` and stays so at every longer measured
    length: ``{"n": estimate or None, "below": first measured N where cheaper, "above": the measured N
    before it}``. The estimate interpolates the log ratio linearly in log N between the two points;
    it is the first measured length when ``kind`` is cheaper everywhere, and None when it never is
    (or when the two were not measured at common lengths)."""
    mine = {r["n"]: r[key] for r in rows if r["kind"] == kind and r[key]}
    theirs = {r["n"]: r[key] for r in rows if r["kind"] == versus and r[key]}
    common = sorted(set(mine) & set(theirs))
    if not common:
        return {"n": None, "below": None, "above": None}
    log_ratio = [math.log(mine[n] / theirs[n]) for n in common]
    first = len(common)
    while first > 0 and log_ratio[first - 1] < 0:
        first -= 1
    if first == len(common):
        return {"n": None, "below": None, "above": None}
    if first == 0:
        return {"n": common[0], "below": common[0], "above": None}
    n0, n1, r0, r1 = common[first - 1], common[first], log_ratio[first - 1], log_ratio[first]
    estimate = math.exp(math.log(n0) + (math.log(n1) - math.log(n0)) * r0 / (r0 - r1))
    return {"n": estimate, "below": n1, "above": n0}


def plot_cost(rows: List[Dict], path: str, versus: Optional[str] = "softmax") -> None:
    """Time and peak memory against N, log-log, one line per kind; the point where each linear kind
    overtakes ``versus`` in time is marked with a dotted vertical line, and the memory every kind
    needs for its output and input gradients is drawn as a grey band."""
    plt = pyplot()
    fig, (time_ax, memory_ax) = plt.subplots(1, 2, figsize=(12, 4.5))
    kinds = list(dict.fromkeys(r["kind"] for r in rows))
    floor = {r["n"]: r["floor_mib"] for r in rows}
    memory_ax.plot(list(floor), list(floor.values()), color="gray", linewidth=6, alpha=0.3,
                   label="output + q, k, v gradients")
    for i, kind in enumerate(kinds):
        points = [r for r in rows if r["kind"] == kind]
        ns = [r["n"] for r in points]
        line = log_line(time_ax, ns, [r["ms"] for r in points], label=kind, **line_style(i))
        time_ax.fill_between(ns, [r["ms_p25"] for r in points], [r["ms_p75"] for r in points],
                             color=line.get_color(), alpha=0.2, linewidth=0)
        memory = [(r["n"], r["memory_mib"]) for r in points if r["memory_mib"] is not None]
        if memory:
            log_line(memory_ax, [n for n, _ in memory], [m for _, m in memory], label=kind, **line_style(i))
        if versus in kinds and get_kind(kind).is_linear:
            where = crossover(rows, kind, versus)["n"]
            if where is not None:
                time_ax.axvline(where, color=line.get_color(), linestyle=":", linewidth=1)
    for ax, label in ((time_ax, "forward + backward time (ms)"), (memory_ax, "peak memory added (MiB)")):
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_xlabel("sequence length N")
        ax.set_ylabel(label)
        ax.legend(fontsize=8)
    time_ax.set_title(f"time; dotted: a linear kind overtakes {versus}" if versus in kinds else "time")
    memory_ax.set_title("memory on top of q, k, v and the output gradient")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
