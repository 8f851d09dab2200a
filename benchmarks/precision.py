"""Measures the error of each op in bfloat16 and float16 against float64, next to torch's composite.

    .venv/bin/python benchmarks/precision.py [--seq-lens 1024 16384] [--device cpu]

For every case the inputs are drawn once in float64 (normal, mean 0.5 so that values do not average
out), rounded to the low dtype, and the float64 result on those rounded inputs is the truth. Printed:
relative error (||x - truth|| / ||truth||) of the output and of dq, dk, dv for actattn and for the
torch composite run in the same dtype (SDPA for softmax, actattn.reference otherwise): the README's
precision table. flash-attention's rule, which the tests hold, is actattn's error <= 2x the composite's.
"""

from __future__ import annotations

import argparse

import torch
import torch.nn.functional as F

import actattn
from actattn import reference

CASES = {
    "softmax causal": (lambda q, k, v: actattn.attention(q, k, v, causal=True),
                       lambda q, k, v: F.scaled_dot_product_attention(q, k, v, is_causal=True), False),
    "sigmoid": (lambda q, k, v: actattn.attention(q, k, v, activation="sigmoid"),
                lambda q, k, v: reference.attention(q, k, v, "sigmoid"), False),
    "linear elu causal": (lambda q, k, v: actattn.linear_attention(q, k, v, causal=True),
                          lambda q, k, v: reference.chunked_linear_attention(q, k, v, "elu", True), True),
}


def relative_errors(fn, inputs, truth, truth_grads, grad_out):
    leaves = [t.detach().requires_grad_() for t in inputs]
    out = fn(*leaves)
    grads = torch.autograd.grad(out, leaves, grad_out.to(out.dtype))
    return [((x.double() - t).norm() / t.norm()).item() for x, t in zip([out, *grads], [truth, *truth_grads])]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[1])
    parser.add_argument("--seq-lens", type=int, nargs="+", default=[1024, 16384])
    parser.add_argument("--quadratic-max-len", type=int, default=4096, help="longest N for the O(N^2) cases")
    parser.add_argument("--heads", type=int, default=2)
    parser.add_argument("--head-dim", type=int, default=64)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    print("| case | N | dtype | out: actattn / composite | dq | dk | dv |")
    print("|---|---|---|---|---|---|---|")
    for name, (kernel, composite, linear) in CASES.items():
        for n in args.seq_lens:
            if not linear and n > args.quadratic_max_len:
                continue
            gen = torch.Generator().manual_seed(0)
            shape = (1, args.heads, n, args.head_dim)
            q, k, v, grad_out = (torch.randn(shape, generator=gen, dtype=torch.float64) + 0.5 for _ in range(4))
            for dtype in (torch.bfloat16, torch.float16):
                low = [t.to(device=args.device, dtype=dtype) for t in (q, k, v)]
                exact = [t.double().requires_grad_() for t in low]
                truth = kernel(*exact)
                truth_grads = torch.autograd.grad(truth, exact, grad_out.to(args.device))
                ours = relative_errors(kernel, low, truth.detach(), truth_grads, grad_out.to(args.device))
                theirs = relative_errors(composite, low, truth.detach(), truth_grads, grad_out.to(args.device))
                cells = [f"{a:.2e} / {b:.2e}" for a, b in zip(ours, theirs)]
                print(f"| {name} | {n} | {str(dtype).replace('torch.', '')} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
