"""Compare the attention activations on random data: outputs, gradient norms, and time.

    python -m actattn.demo [--seq-len 256] [--layers 8] [--device cpu]

For each kind (softmax, sigmoid, relu scores; linear attention with identity, relu, elu+1 maps) it
runs a stack of causal attention layers on the same random input and weights, once without residual
connections, x_{l+1} = attn(LN(x_l) W_l), and once with them, x_{l+1} = x_l + attn(LN(x_l) W_l), and
reports the output scale of one layer, the gradient norm reaching the input relative to the one at
the output (the direct view of vanishing or exploding gradients), and forward+backward time. This is
a quick look on random data, not training.
"""

from __future__ import annotations

import argparse
import math
import time
from typing import Dict, List

import torch
import torch.nn.functional as F

from .nn.kinds import KINDS

def attention_layer(kind: str, x: torch.Tensor, weight: torch.Tensor, heads: int) -> torch.Tensor:
    batch, seq_len, width = x.shape
    q, k, v = (F.layer_norm(x, (width,)) @ weight).split(width, dim=-1)
    q, k, v = (t.view(batch, seq_len, heads, width // heads).transpose(1, 2) for t in (q, k, v))
    return KINDS[kind](q, k, v, causal=True, key_lengths=None).transpose(1, 2).reshape(batch, seq_len, width)


def run_stack(
    kind: str, x: torch.Tensor, weights: List[torch.Tensor], heads: int, residual: bool
) -> Dict[str, float]:
    x = x.detach().requires_grad_()
    start = time.perf_counter()
    h = x
    first_layer_rms = None
    for w in weights:
        out = attention_layer(kind, h, w, heads)
        if first_layer_rms is None:
            first_layer_rms = out.detach().pow(2).mean().sqrt().item()
        h = h + out if residual else out
    h.retain_grad()
    loss = (h * torch.randn(h.shape, generator=torch.Generator().manual_seed(1), dtype=h.dtype)).sum()
    loss.backward()
    elapsed = time.perf_counter() - start
    return {
        "layer_rms": first_layer_rms,
        "grad_ratio": (x.grad.norm() / h.grad.norm()).item(),
        "finite": bool(torch.isfinite(x.grad).all()),
        "ms": 1e3 * elapsed,
    }


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--seq-len", type=int, default=256)
    parser.add_argument("--width", type=int, default=128)
    parser.add_argument("--heads", type=int, default=4)
    parser.add_argument("--layers", type=int, default=8)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    gen = torch.Generator().manual_seed(args.seed)
    x = torch.randn(args.batch, args.seq_len, args.width, generator=gen)
    # Xavier-like init of the fused q/k/v projection keeps the input scale layer to layer.
    weights = [
        torch.randn(args.width, 3 * args.width, generator=gen) / math.sqrt(args.width) for _ in range(args.layers)
    ]
    print(
        f"{args.layers} causal attention layers, batch {args.batch}, seq_len {args.seq_len}, width {args.width}, "
        f"{args.heads} heads, seed {args.seed}, on {torch.get_num_threads()} CPU threads\n"
    )
    print("|dL/dx_in| / |dL/dx_out|: gradient norm reaching the input over the one at the output")
    print(f"{'kind':<16} {'1-layer rms':>11} {'ratio, plain':>13} {'ratio, residual':>16} {'fwd+bwd ms':>11}")
    for kind in KINDS:
        plain = run_stack(kind, x, weights, args.heads, residual=False)
        residual = run_stack(kind, x, weights, args.heads, residual=True)
        ratios = [f"{r['grad_ratio']:.3e}" if r["finite"] else "non-finite" for r in (plain, residual)]
        print(f"{kind:<16} {plain['layer_rms']:>11.3e} {ratios[0]:>13} {ratios[1]:>16} {plain['ms']:>11.1f}")
    print("\nA ratio far below 1: gradients vanish on the way down the stack; far above 1: they explode.")


if __name__ == "__main__":
    main()
