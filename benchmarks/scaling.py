"""Forward + backward time against sequence length on the CPU, per op, as a table and a log-log plot:
where causal linear attention overtakes causal softmax (ours and torch's SDPA).

    .venv/bin/python benchmarks/scaling.py [--seq-lens 64 128 ... 16384] [--quadratic-max 8192]
                                           [--head-dim 64] [--repeats 3] [--json out/scaling.json]
                                           [--plot benchmarks/results/cpu-scaling.png]

fp32, B=1, H=8, torch's thread count; every time is the median of --repeats after a warm-up, all in one
process. Quadratic ops stop at --quadratic-max (their time grows as N^2: N = 16384 would take minutes).
The plot needs matplotlib (the `compare` extra).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Callable, Dict, List, Optional

import torch
import torch.nn.functional as F

import actattn
from bench import timed

# name -> (fwd+bwd call, quadratic?)
OPS: Dict[str, tuple] = {
    "actattn softmax causal": (lambda q, k, v: actattn.attention(q, k, v, causal=True), True),
    "torch SDPA causal": (lambda q, k, v: F.scaled_dot_product_attention(q, k, v, is_causal=True), True),
    "actattn relu causal": (lambda q, k, v: actattn.attention(q, k, v, activation="relu", causal=True), True),
    "actattn linear elu causal": (lambda q, k, v: actattn.linear_attention(q, k, v, causal=True), False),
    "actattn linear elu non-causal": (lambda q, k, v: actattn.linear_attention(q, k, v), False),
}


def measure(seq_lens: List[int], quadratic_max: int, head_dim: int, repeats: int) -> Dict[str, Dict[int, float]]:
    """{op: {N: fwd+bwd ms}}"""
    times: Dict[str, Dict[int, float]] = {name: {} for name in OPS}
    for n in seq_lens:
        gen = torch.Generator().manual_seed(0)
        q, k, v = (torch.randn(1, 8, n, head_dim, generator=gen).requires_grad_() for _ in range(3))
        for name, (call, quadratic) in OPS.items():
            if quadratic and n > quadratic_max:
                continue
            times[name][n] = timed(lambda: call(q, k, v), "cpu", repeats, backward=True, leaves=(q, k, v))
    return times


def crossover(times: Dict[str, Dict[int, float]], linear: str, quadratic: str) -> Optional[int]:
    """The shortest N from which `linear` is faster than `quadratic` at every measured N."""
    shared = sorted(set(times[linear]) & set(times[quadratic]))
    for i, n in enumerate(shared):
        if all(times[linear][m] < times[quadratic][m] for m in shared[i:]):
            return n
    return None


def plot(times: Dict[str, Dict[int, float]], path: str, title: str) -> None:
    from actattn.plots import line_style, pyplot

    plt = pyplot()
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for index, (name, by_n) in enumerate(times.items()):
        if by_n:
            ax.plot(list(by_n), list(by_n.values()), label=name, **line_style(index))
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    ax.set_xlabel("sequence length N")
    ax.set_ylabel("forward + backward, ms")
    ax.set_title(title, fontsize=9)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv: Optional[List[str]] = None, out: Callable[[str], None] = print) -> Dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seq-lens", type=int, nargs="+", default=[64, 128, 256, 512, 1024, 2048, 4096, 8192, 16384])
    parser.add_argument("--quadratic-max", type=int, default=8192)
    parser.add_argument("--head-dim", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--json")
    parser.add_argument("--plot")
    args = parser.parse_args(argv)

    title = (f"CPU, actattn's {actattn.cpu_isa()} build, {torch.get_num_threads()} threads, torch {torch.__version__}: "
             f"fp32, B=1 H=8 D={args.head_dim}, median of {args.repeats}")
    times = measure(args.seq_lens, args.quadratic_max, args.head_dim, args.repeats)
    out(title + "\n")
    out("| N | " + " | ".join(f"{name} ms" for name in OPS) + " |")
    out("|---" * (len(OPS) + 1) + "|")
    for n in args.seq_lens:
        out(f"| {n} | " + " | ".join(f"{times[name][n]:.2f}" if n in times[name] else "—" for name in OPS) + " |")
    crossovers = {peer: crossover(times, "actattn linear elu causal", peer)
                  for peer in ("actattn softmax causal", "torch SDPA causal")}
    out("")
    for peer, n in crossovers.items():
        out(f"actattn linear elu causal is faster than {peer} from N = {n} on" if n else
            f"actattn linear elu causal is not faster than {peer} at the longest N measured")
    result = {"title": title, "times_ms": {name: {str(n): t for n, t in by_n.items()} for name, by_n in times.items()},
              "crossover_n": crossovers}
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(result, indent=1))
    if args.plot:
        plot(times, args.plot, title)
    return result


if __name__ == "__main__":
    main()
