"""The CPU goal table: every row of the CPU-speed goals, measured in one process, ratio against goal.

    .venv/bin/python benchmarks/bench.py --preset cpu [--seq-lens 1024 4096] [--linear-seq-lens 16384]
                                         [--head-dims 64 128] [--cases softmax "linear elu"]
                                         [--memory-seq-len 65536] [--json out/cpu_goals.json]

Each row times actattn and its peer in the same run (median of --repeats after a warm-up), fp32, B=1,
H=8, on torch's thread count (2 on the development machine). "ratio" is actattn's time over the
peer's, except in the thread-scaling rows (2 threads over 1) and the bf16 rows (bf16 over fp32). A
goal "<= x" is met when ratio <= x. Where fast-transformers imports, a row times its CPU causal product
against ours (unnormalised, identity map); elsewhere the table says it is left out. After the table, the
peak memory of causal linear attention's forward + backward at N = --memory-seq-len (D = the first head
dim) against the tensors no implementation can avoid: q, k, v, the output and their gradients.
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path
from typing import Callable, Dict, List, Optional

import torch
import torch.nn.functional as F

import actattn
from actattn import reference
from actattn.peak_memory import PeakMemory

MAPS = ("identity", "relu", "elu")


def einsum_linear(q, k, v, feature_map):
    """Non-causal normalised linear attention as three einsums (the peer of the non-causal goal)."""
    a, b = reference.feature_map(q, feature_map) * q.shape[-1] ** -0.5, reference.feature_map(k, feature_map)
    kv = torch.einsum("bhnd,bhne->bhde", b, v)
    num = torch.einsum("bhnd,bhde->bhne", a, kv)
    den = torch.einsum("bhnd,bhd->bhn", a, b.sum(dim=2)).unsqueeze(-1)
    return num / (den + 1e-6)


def fast_transformers_causal_product() -> Optional[Callable]:
    """fast-transformers' causal product (its CPU kernel for CPU tensors), or None where it does not import."""
    if importlib.util.find_spec("fast_transformers") is None:
        return None
    try:
        from fast_transformers.causal_product import causal_dot_product
    except ImportError:  # installed, but its compiled extension does not load with this torch
        return None
    return causal_dot_product


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
    causal_product = fast_transformers_causal_product()
    if causal_product is not None:  # the same unnormalised sum, sum_{j <= i} (q_i . k_j) v_j, at scale 1
        add("linear identity causal, unnormalised", "fast-transformers causal product", None, 1 / 3,
            lambda q, k, v: actattn.linear_attention(q, k, v, feature_map="identity", causal=True, normalize=False,
                                                     scale=1.0),
            lambda q, k, v: causal_product(q, k, v))
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
            ours = timed(lambda: row["ours"](q, k, v), "cpu", repeats, backward, (q, k, v))
            if row["kind"] == "threads":
                threads = torch.get_num_threads()
                torch.set_num_threads(1)
                try:
                    theirs = timed(lambda: row["ours"](q, k, v), "cpu", repeats, backward, (q, k, v))
                finally:
                    torch.set_num_threads(threads)
            elif row["kind"] == "bf16":
                low = [t.detach().bfloat16().requires_grad_() for t in (q, k, v)]
                theirs, ours = ours, timed(lambda: row["ours"](*low), "cpu", repeats, backward, low)
            else:
                theirs = timed(lambda: row["theirs"](q, k, v), "cpu", repeats, backward, (q, k, v))
        key = "both" if backward else "fwd"
        results[f"ours_{key}"], results[f"theirs_{key}"], results[f"ratio_{key}"] = ours, theirs, ours / theirs
    return results


def peak_memory(n: int, dim: int) -> Dict:
    """Peak memory of causal linear attention's forward + backward (elu, B=1, H=8, fp32) against q, k, v,
    the output and their gradients (eight (1, 8, n, dim) tensors), as issue #8's goal states it."""
    gen = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(1, 8, n, dim, generator=gen).requires_grad_() for _ in range(3))
    grad_out = torch.randn(1, 8, n, dim, generator=gen)
    actattn.linear_attention(q, k, v, causal=True).backward(grad_out)  # warm-up: pages touched once
    q.grad = k.grad = v.grad = None
    with PeakMemory("cpu") as peak:
        out = actattn.linear_attention(q, k, v, causal=True)
        out.backward(grad_out)
    tensor_mib = q.numel() * q.element_size() / 2**20
    if peak.mib is None:
        return dict(n=n, dim=dim, necessary_mib=8 * tensor_mib, peak_mib=None, ratio=None)
    held = 4 * tensor_mib + peak.mib  # q, k, v and grad_out, held before the step, plus what it added
    return dict(n=n, dim=dim, necessary_mib=8 * tensor_mib, peak_mib=held, ratio=held / (8 * tensor_mib))


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
    if fast_transformers_causal_product() is None:
        print("\nfast-transformers does not import here: the row against its CPU causal product is left out "
              "(pip install pytorch-fast-transformers, built against this torch, adds it).")
    memory = None
    if args.memory_seq_len:
        memory = peak_memory(args.memory_seq_len, args.head_dims[0])
        measured = "n/a (not measurable here)" if memory["ratio"] is None else (
            f"{memory['peak_mib']:.0f} MiB, ratio {memory['ratio']:.2f} ({verdict(memory['ratio'], 1.3)})")
        print(f"\npeak memory, linear elu causal fwd+bwd, D={memory['dim']} N={memory['n']}: q, k, v, the output and "
              f"their gradients {memory['necessary_mib']:.0f} MiB; held at the step's peak {measured}")
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps({"torch": torch.__version__, "cpu_isa": actattn.cpu_isa(),
                                               "threads": torch.get_num_threads(),
                                               "rows": records, "peak_memory": memory}, indent=1))
