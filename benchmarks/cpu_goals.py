"""The CPU goal table: every row of the CPU-speed goals, measured in one process, ratio against goal.

    .venv/bin/python benchmarks/bench.py --preset cpu [--seq-lens 1024 4096] [--linear-seq-lens 16384]
                                         [--head-dims 64 128] [--cases softmax "linear elu"]
                                         [--json out/cpu_goals.json]

Each row times actattn and its peer in the same run (median of --repeats after a warm-up), fp32, B=1,
H=8, on torch's thread count (2 on the development machine). "ratio" is actattn's time over the
peer's, except in the thread-scaling rows (2 threads over 1) and the bf16 rows (bf16 over fp32). A
goal "<= x" is met when ratio <= x.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Callable, Dict, List, Optional

import torch
import torch.nn.functional as F

import actattn
from actattn import reference

MAPS = ("identity", "relu", "elu")


def einsum_linear(q, k, v, feature_map):
    """Non-causal normalised linear attention as three einsums (the peer of the non-causal goal)."""
    a, b = reference.feature_map(q, feature_map) * q.shape[-1] ** -0.5, reference.feature_map(k, feature_map)
    kv = torch.einsum("bhnd,bhne->bhde", b, v)
    num = torch.einsum("bhnd,bhde->bhne", a, kv)
    den = torch.einsum("bhnd,bhd->bhn", a, b.sum(dim=2)).unsqueeze(-1)
    return num / (den + 1e-6)


def rows_for(n: int, dim: int, linear_only: bool) -> List[Dict]:
    """(case, peer, goal, actattn call, peer call, what is compared) for one (N, D)."""
    rows = []

    def add(case, peer, goal_fwd, goal_both, ours, theirs, kind="time"):
        rows.append(dict(case=case, n=n, dim=dim, peer=peer, goal_fwd=goal_fwd, goal_both=goal_both, ours=ours,
                         theirs=theirs, kind=kind))

    if not linear_only:
        for causal in (False, True):
            name = "softmax causal" if causal else "softmax"
            add(name, "SDPA", 1.0, 1.0, lambda q, k, v, c=causal: actattn.attention(q, k, v, causal=c),
                lambda q, k, v, c=causal: F.scaled_dot_product_attention(q, k, v, is_causal=c))
        for activation, goal in (("sigmoid", 0.9), ("relu", 0.8)):
            add(activation, "actattn softmax", goal, goal,
                lambda q, k, v, a=activation: actattn.attention(q, k, v, activation=a),
                lambda q, k, v: actattn.attention(q, k, v))
        add("softmax, 2 threads / 1", "same op, 1 thread", 0.6, 0.6, lambda q, k, v: actattn.attention(q, k, v),
            None, kind="threads")
        add("softmax bf16 / fp32", "same op in fp32", 1.0, 1.0, lambda q, k, v: actattn.attention(q, k, v), None,
            kind="bf16")
    for feature_map in MAPS:
        normalize = feature_map != "identity"
        label = f"linear {feature_map} causal{'' if normalize else ', unnormalised'}"
        add(label, "chunked composite", 1 / 3, 1 / 4,
            lambda q, k, v, m=feature_map, z=normalize: actattn.linear_attention(q, k, v, feature_map=m, causal=True,
                                                                                 normalize=z),
            lambda q, k, v, m=feature_map, z=normalize: reference.chunked_linear_attention(q, k, v, m, True, z))
    add("linear elu non-causal", "einsum composite", None, 1 / 2,
        lambda q, k, v: actattn.linear_attention(q, k, v), lambda q, k, v: einsum_linear(q, k, v, "elu"))
    add("linear elu causal, 2 threads / 1", "same op, 1 thread", 0.6, 0.6,
        lambda q, k, v: actattn.linear_attention(q, k, v, causal=True), None, kind="threads")
    add("linear elu causal bf16 / fp32", "same op in fp32", 1.0, 1.0,
        lambda q, k, v: actattn.linear_attention(q, k, v, causal=True), None, kind="bf16")
    return rows


def measure(row: Dict, q, k, v, timed: Callable, repeats: int) -> Dict:
    results = {}
    for backward in (False, True):
        with torch.set_grad_enabled(backward):
            ours = timed(lambda: row["ours"](q, k, v), "cpu", repeats, backward)
            if row["kind"] == "threads":
                threads = torch.get_num_threads()
                torch.set_num_threads(1)
                try:
                    theirs = timed(lambda: row["ours"](q, k, v), "cpu", repeats, backward)
                finally:
                    torch.set_num_threads(threads)
            elif row["kind"] == "bf16":
                low = [t.detach().bfloat16().requires_grad_() for t in (q, k, v)]
                theirs, ours = ours, timed(lambda: row["ours"](*low), "cpu", repeats, backward)
            else:
                theirs = timed(lambda: row["theirs"](q, k, v), "cpu", repeats, backward)
        key = "both" if backward else "fwd"
        results[f"ours_{key}"], results[f"theirs_{key}"], results[f"ratio_{key}"] = ours, theirs, ours / theirs
    return results


def verdict(ratio: float, goal: Optional[float]) -> str:
    if goal is None:
        return "—"
    return f"≤ {goal:.2f} {'met' if ratio <= goal else 'NOT met'}"


def main(args, timed: Callable) -> None:
    print(f"cpu goals | torch {torch.__version__} | actattn's {actattn.cpu_isa()} build | {torch.get_num_threads()} "
          f"threads | fp32 | B=1 H=8 | median of {args.repeats}\n")
    print("| case | D | N | compared with | actattn fwd ms | peer fwd ms | ratio fwd | goal fwd "
          "| actattn fwd+bwd ms | peer fwd+bwd ms | ratio fwd+bwd | goal fwd+bwd |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    records = []
    for dim in args.head_dims:
        for n in sorted(set(args.seq_lens) | set(args.linear_seq_lens)):
            gen = torch.Generator().manual_seed(0)
            q, k, v = (torch.randn(1, 8, n, dim, generator=gen).requires_grad_() for _ in range(3))
            for row in rows_for(n, dim, linear_only=n not in args.seq_lens):
                if row["kind"] == "threads" and n < 4096:
                    continue
                if args.cases and not any(row["case"].startswith(prefix) for prefix in args.cases):
                    continue
                r = measure(row, q, k, v, timed, args.repeats)
                print(f"| {row['case']} | {dim} | {n} | {row['peer']} | {r['ours_fwd']:.2f} | {r['theirs_fwd']:.2f} "
                      f"| {r['ratio_fwd']:.2f} | {verdict(r['ratio_fwd'], row['goal_fwd'])} | {r['ours_both']:.2f} "
                      f"| {r['theirs_both']:.2f} | {r['ratio_both']:.2f} | {verdict(r['ratio_both'], row['goal_both'])} |",
                      flush=True)
                records.append({key: row[key] for key in ("case", "n", "dim", "peer", "goal_fwd", "goal_both")} | r)
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps({"torch": torch.__version__, "cpu_isa": actattn.cpu_isa(),
                                               "threads": torch.get_num_threads(),
                                               "rows": records}, indent=1))
