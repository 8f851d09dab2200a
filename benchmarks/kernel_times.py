"""Where one fwd+bwd call's time goes: every kernel (or, on the CPU, every op) that torch.profiler
records during one call after a warm-up, with its count and total time, as a markdown table per case.

    python benchmarks/kernel_times.py [--device cuda] [--dtype bfloat16] [--batch 4] [--heads 16]
                                      [--cases "linear relu causal 64 16384" "softmax 128 4096"]

A case is "<op> [feature map or activation] [causal] <D> <N>", op linear or one of softmax, sigmoid,
relu. The GPU check (benchmarks/gpu_check.sh) runs it with what time is left, so that a run that finds
a kernel slower than its budget also says which of the call's kernels (and which glue: copies, fills,
conversions) took the time, without an Nsight Compute session.
"""

from __future__ import annotations

import argparse

import torch
from torch.profiler import ProfilerActivity, profile

import actattn

# The goal cases first (#9: causal linear against fla, softmax D = 64 against SDPA-flash).
DEFAULT_CASES = ["linear relu causal 64 16384", "softmax 64 4096", "linear relu causal 128 16384",
                 "softmax 128 4096", "linear elu 64 16384", "softmax causal 64 4096"]


def parse_case(text: str):
    words = text.split()
    op, causal = words[0], "causal" in words
    dim, seq_len = int(words[-2]), int(words[-1])
    rest = [w for w in words[1:-2] if w != "causal"]
    kind = rest[0] if rest else ("elu" if op == "linear" else None)
    return op, kind, causal, dim, seq_len


def call_for(op, kind, causal, q, k, v):
    if op == "linear":
        return lambda: actattn.linear_attention(q, k, v, feature_map=kind, causal=causal)
    return lambda: actattn.attention(q, k, v, activation=op, causal=causal)


def device_time(event, device: str) -> float:
    """Microseconds the event's own kernels (CUDA) or own CPU work took."""
    if device == "cuda":
        return getattr(event, "device_time_total", None) or getattr(event, "cuda_time_total", 0.0)
    return event.self_cpu_time_total


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--dtype", default="bfloat16", choices=["float32", "bfloat16", "float16"])
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--heads", type=int, default=16)
    parser.add_argument("--cases", nargs="+", default=DEFAULT_CASES)
    parser.add_argument("--rows", type=int, default=12, help="kernels listed per case, longest first")
    args = parser.parse_args(argv)
    dtype = getattr(torch, args.dtype)
    activities = [ProfilerActivity.CUDA] if args.device == "cuda" else [ProfilerActivity.CPU]

    print(f"device {args.device} | torch {torch.__version__} | {args.dtype} | B={args.batch} H={args.heads} | "
          "one fwd+bwd after a warm-up\n")
    for text in args.cases:
        op, kind, causal, dim, seq_len = parse_case(text)
        shape = (args.batch, args.heads, seq_len, dim)
        q, k, v = (torch.randn(shape, device=args.device, dtype=dtype, requires_grad=True) for _ in range(3))
        call = call_for(op, kind, causal, q, k, v)

        def once():
            out = call()
            out.backward(torch.ones_like(out))

        once()
        for t in (q, k, v):
            t.grad = None  # else the profiled backward adds into the warm-up's gradients (aten::add_)
        if args.device == "cuda":
            torch.cuda.synchronize()
        with profile(activities=activities) as prof:
            once()
            if args.device == "cuda":
                torch.cuda.synchronize()
        events = [e for e in prof.key_averages() if device_time(e, args.device) > 0]
        if args.device == "cpu":
            events = [e for e in events if not e.key.startswith("autograd::")]
        events.sort(key=lambda e: device_time(e, args.device), reverse=True)
        total = sum(device_time(e, args.device) for e in events)
        print(f"### {text}: {total / 1e3:.2f} ms in {'kernels' if args.device == 'cuda' else 'ops'}\n")
        print("| kernel | calls | ms | share |")
        print("|---|---|---|---|")
        for e in events[: args.rows]:
            name = e.key if len(e.key) <= 110 else e.key[:107] + "..."
            name = name.replace("|", "\\|")
            t = device_time(e, args.device)
            print(f"| `{name}` | {e.count} | {t / 1e3:.3f} | {100 * t / total:.0f} % |")
        if len(events) > args.rows:
            rest = sum(device_time(e, args.device) for e in events[args.rows:])
            print(f"| ({len(events) - args.rows} more) | | {rest / 1e3:.3f} | {100 * rest / total:.0f} % |")
        print()
        del q, k, v
        if args.device == "cuda":
            torch.cuda.empty_cache()


if __name__ == "__main__":
    main()
