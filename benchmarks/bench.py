"""Times actattn's ops against torch baselines measured in the same run, and prints a markdown table.

    .venv/bin/python benchmarks/bench.py [--device cpu|cuda] [--dtype float32|bfloat16|float16]
                                         [--batch 2] [--heads 4] [--head-dim 64] [--value-head-dim D]
                                         [--seq-lens 512 2048]
    .venv/bin/python benchmarks/bench.py --preset cpu   # the CPU goal table (benchmarks/cpu_goals.py)

Baselines: softmax against F.scaled_dot_product_attention; sigmoid and relu scores against the
materialising torch composite (actattn.reference.attention); linear attention against the matmul
composite (actattn.reference.chunked_linear_attention, chunk 64) and, with --fla on a GPU where the
package flash-linear-attention imports, causal linear attention against its Triton kernel
fused_chunk_linear_attn as well (fed its own (B, N, H, D) layout, the feature map applied in torch).
"ratio" is actattn's time over the baseline's: below 1 means actattn is faster. Times are medians over
--repeats runs after a warm-up. --value-head-dim gives v (and so the output) another head dim than q and
k (default: the same), e.g. 192 and 128 for multi-head latent attention's shapes. With --peak-gbs (the
GPU's memory bandwidth, GB/s), linear cases also show the bandwidth floor of fwd+bwd as two calls: the
forward reads q, k, v and writes O, the backward reads q, k, v, O, dO and writes dq, dk, dv, each tensor
once (12 tensor passes, 6 of q's size and 6 of v's).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from typing import Callable, List, Tuple

import torch
import torch.nn.functional as F

import actattn
from actattn import reference


def timed(fn: Callable[[], torch.Tensor], device: str, repeats: int, backward: bool, leaves=()) -> float:
    """Median milliseconds of fn() (and a backward through it when backward). The leaves' gradients are
    dropped before each call, as a training step's zero_grad(set_to_none=True) does, so that a backward
    stores its gradients instead of adding them to the last call's (an extra pass over each leaf)."""

    def once():
        for leaf in leaves:
            leaf.grad = None
        out = fn()
        if backward:
            out.backward(torch.ones_like(out))

    once()  # warm-up: allocations, first-call dispatch
    times = []
    for _ in range(repeats):
        if device == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        once()
        if device == "cuda":
            torch.cuda.synchronize()
        times.append(1e3 * (time.perf_counter() - start))
    return statistics.median(times)


def timed_or_none(fn, device: str, repeats: int, backward: bool, leaves=()):
    """timed(), or None when the call runs out of memory (the materialising composites at long N)."""
    try:
        return timed(fn, device, repeats, backward, leaves)
    except torch.OutOfMemoryError:
        if device == "cuda":
            torch.cuda.empty_cache()
        return None


def fmt(value) -> str:
    """Two decimals; three significant digits below 0.1, so that a short time or a small ratio never
    prints as 0.00."""
    if value is None:
        return "OOM"
    return f"{value:.2f}" if abs(value) >= 0.1 else f"{value:.3g}"


FEATURE_MAPS = {"relu": torch.relu, "elu": lambda x: F.elu(x) + 1}


def fla_cases(q, k, v) -> Tuple[List[Tuple[str, str, Callable, Callable]], Tuple[torch.Tensor, ...]]:
    """Causal linear attention against flash-linear-attention's fused_chunk kernel, if it imports; and
    the (B, N, H, D) leaves it takes."""
    try:
        from fla.ops.linear_attn import fused_chunk_linear_attn
    except ImportError as error:
        print(f"(--fla: flash-linear-attention does not import: {error})\n")
        return [], ()
    qt, kt, vt = (t.detach().transpose(1, 2).contiguous().requires_grad_() for t in (q, k, v))

    def fla(name):
        phi = FEATURE_MAPS[name]
        return lambda: fused_chunk_linear_attn(phi(qt), phi(kt), vt, normalize=True)[0]

    return [
        (f"linear {name} causal", "fla fused_chunk",
         lambda name=name: actattn.linear_attention(q, k, v, feature_map=name, causal=True), fla(name))
        for name in ("relu", "elu")
    ], (qt, kt, vt)


def linear_floor_ms(q, v, peak_gbs) -> float:
    """fwd+bwd bandwidth floor: 6 passes over a tensor of q's size and 6 of v's, see the module docstring."""
    return 6 * (q.numel() + v.numel()) * q.element_size() / (peak_gbs * 1e9) * 1e3


def cases(q, k, v) -> List[Tuple[str, str, Callable, Callable]]:
    """(case, baseline name, actattn call, baseline call)."""
    return [
        ("softmax", "SDPA", lambda: actattn.attention(q, k, v), lambda: F.scaled_dot_product_attention(q, k, v)),
        ("softmax causal", "SDPA", lambda: actattn.attention(q, k, v, causal=True),
         lambda: F.scaled_dot_product_attention(q, k, v, is_causal=True)),
        # Attention dropout: torch's CPU SDPA takes its math path for it (an N x N mask drawn and stored).
        ("softmax dropout 0.1", "SDPA", lambda: actattn.attention(q, k, v, dropout_p=0.1),
         lambda: F.scaled_dot_product_attention(q, k, v, dropout_p=0.1)),
        ("sigmoid causal", "composite", lambda: actattn.attention(q, k, v, activation="sigmoid", causal=True),
         lambda: reference.attention(q, k, v, "sigmoid", True)),
        ("relu causal", "composite", lambda: actattn.attention(q, k, v, activation="relu", causal=True),
         lambda: reference.attention(q, k, v, "relu", True)),
        ("linear elu", "composite", lambda: actattn.linear_attention(q, k, v),
         lambda: reference.chunked_linear_attention(q, k, v, "elu")),
        ("linear relu causal", "composite",
         lambda: actattn.linear_attention(q, k, v, feature_map="relu", causal=True),
         lambda: reference.chunked_linear_attention(q, k, v, "relu", True)),
        ("linear elu causal", "composite", lambda: actattn.linear_attention(q, k, v, causal=True),
         lambda: reference.chunked_linear_attention(q, k, v, "elu", True)),
    ]


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16"])
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--heads", type=int, default=4)
    parser.add_argument("--head-dim", type=int, default=64)
    parser.add_argument("--value-head-dim", type=int, default=None, help="v's head dim (default: --head-dim)")
    parser.add_argument("--seq-lens", type=int, nargs="+", default=[512, 2048])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--cases", nargs="+", default=None, help="only cases starting with one of these")
    parser.add_argument("--fla", action="store_true", help="also time flash-linear-attention's fused_chunk")
    parser.add_argument("--peak-gbs", type=float, default=None, help="memory bandwidth for the linear floor")
    parser.add_argument("--preset", choices=["cpu"], help="cpu: the CPU goal table (benchmarks/cpu_goals.py); "
                        "reads --seq-lens (default 1024 4096), --linear-seq-lens, --head-dims, --cases, --json")
    parser.add_argument("--linear-seq-lens", type=int, nargs="*", default=[16384], help="--preset cpu: linear only")
    parser.add_argument("--head-dims", type=int, nargs="+", default=[64, 128], help="--preset cpu")
    parser.add_argument("--memory-seq-len", type=int, default=65536,
                        help="--preset cpu: N of the peak-memory measurement (0: none)")
    parser.add_argument("--json", help="--preset cpu: also write the rows as JSON to this file")
    args = parser.parse_args(argv)
    if args.preset == "cpu":
        import cpu_goals

        if "--seq-lens" not in (argv if argv is not None else sys.argv):
            args.seq_lens = [1024, 4096]
        return cpu_goals.main(args, timed)
    dtype = getattr(torch, args.dtype)
    v_dim = args.value_head_dim or args.head_dim
    dims = f"D={args.head_dim}" if v_dim == args.head_dim else f"Dk={args.head_dim} Dv={v_dim}"

    print(
        f"device cpu ({torch.get_num_threads()} threads, actattn's {actattn.cpu_isa()} build)" if args.device == "cpu"
        else f"device {args.device}",
        f"| torch {torch.__version__} | {args.dtype} | B={args.batch} H={args.heads} {dims}"
        f" | median of {args.repeats} | ratio = actattn / baseline (< 1: actattn faster)\n",
    )
    print("| case | N | baseline | actattn fwd ms | baseline fwd ms | ratio fwd "
          "| actattn fwd+bwd ms | baseline fwd+bwd ms | ratio fwd+bwd | floor fwd+bwd ms |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for n in args.seq_lens:
        gen = torch.Generator().manual_seed(0)
        q, k, v = (
            torch.randn(args.batch, args.heads, n, dim, generator=gen).to(args.device, dtype).requires_grad_()
            for dim in (args.head_dim, args.head_dim, v_dim)
        )
        extra, fla_leaves = fla_cases(q, k, v) if args.fla and args.device == "cuda" else ([], ())
        leaves = (q, k, v, *fla_leaves)
        for case, baseline, ours, theirs in cases(q, k, v) + extra:
            if args.cases and not any(case.startswith(prefix) for prefix in args.cases):
                continue
            row = []
            for backward in (False, True):
                with torch.set_grad_enabled(backward):
                    a = timed_or_none(ours, args.device, args.repeats, backward, leaves)
                    b = timed_or_none(theirs, args.device, args.repeats, backward, leaves)
                row += [fmt(a), fmt(b), fmt(a / b if a and b else None)]
            floor = linear_floor_ms(q, v, args.peak_gbs) if args.peak_gbs and case.startswith("linear") else None
            row.append("—" if floor is None else f"{floor:.2f}")
            print(f"| {case} | {n} | {baseline} | " + " | ".join(row) + " |", flush=True)


if __name__ == "__main__":
    main()
