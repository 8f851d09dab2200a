"""Gradient-flow instruments: a recorder that attaches to a model, plots, and a depth sweep.

The recorder answers, per step and per layer: how large are the gradients of the parameters, of the
attention's inputs (q, k, v) and of its output, and what does the attention look like (quadratic
kinds: mean row entropy of the normalised weights and, for relu, the fraction of exact zeros; linear
kinds: the norm of the final state and the range of the denominators).
"""

from __future__ import annotations

import math
from collections import defaultdict
from typing import Dict, List, Optional, Sequence

import torch
from torch import Tensor, nn

from . import reference
from .nn.blocks import CausalSelfAttention, DecoderBlock
from .nn.kinds import get_kind
from .plots import band, line_style, log_line, pyplot, seed_band


class GradientFlowRecorder:
    """Records gradient norms and attention statistics of a model, one record per ``step()``.

    Usage::

        recorder = GradientFlowRecorder(model)          # finds every CausalSelfAttention
        loss.backward(); recorder.step(step)           # after backward, before optimizer.zero_grad()
        recorder.records  # [{"step": s, "layers": {name: {...}}}, ...]

    ``layers`` maps each attention module's name to: ``param_grad_norm`` (the 2-norm of the gradients of
    the parameters of the module's enclosing block, or of the attention module itself), ``q_grad_norm``,
    ``k_grad_norm``, ``v_grad_norm``, ``out_grad_norm``, the attention statistics and
    ``out_token_similarity`` (:func:`token_similarity` of the attention output, heads concatenated).
    Statistics cost an O(N^2) (quadratic) or O(N D^2) pass per layer, so record every few steps.
    """

    def __init__(self, model: nn.Module, record_stats: bool = True) -> None:
        self.model = model
        self.record_stats = record_stats
        self.enabled = True  # a trainer turns it off on the steps it does not record
        self.records: List[Dict] = []
        self._pending: Dict[str, Dict[str, float]] = defaultdict(dict)
        self._attention = {name: m for name, m in model.named_modules() if isinstance(m, CausalSelfAttention)}
        blocks = {name: m for name, m in model.named_modules() if isinstance(m, DecoderBlock)}
        # Each attention is reported with the parameters of its block when it has one.
        self._param_owner = {}
        for name, module in self._attention.items():
            parent = name.rsplit(".", 1)[0] if "." in name else ""
            self._param_owner[name] = blocks.get(parent, module)
        for name, module in self._attention.items():
            module.observer = self._observer(name)

    def detach(self) -> None:
        for module in self._attention.values():
            module.observer = None

    def _observer(self, name: str):
        def observe(module: CausalSelfAttention, q: Tensor, k: Tensor, v: Tensor, out: Tensor) -> None:
            if not self.enabled or not torch.is_grad_enabled():
                return
            pending = self._pending[name]
            for label, tensor in (("q", q), ("k", k), ("v", v), ("out", out)):
                if tensor.requires_grad:
                    tensor.register_hook(_store_norm(pending, f"{label}_grad_norm"))
            if self.record_stats:
                pending.update(attention_stats(module.kind.name, q.detach(), k.detach(), v.detach()))
                pending["out_token_similarity"] = token_similarity(out.transpose(1, 2).flatten(-2))

        return observe

    def step(self, step: int) -> Dict:
        """Closes the record of this step (call after backward) and returns it."""
        layers = {}
        for name in self._attention:
            entry = dict(self._pending.get(name, {}))
            grads = [p.grad for p in self._param_owner[name].parameters() if p.grad is not None]
            entry["param_grad_norm"] = _norm(grads)
            layers[name] = entry
        self._pending.clear()
        record = {"step": step, "layers": layers}
        self.records.append(record)
        return record


def token_similarity(h: Tensor) -> float:
    """Rank-collapse meter: the mean cosine similarity between different tokens' representations
    (``h`` is (..., N, D); every leading index is one sequence), averaged over sequences. 1 when every
    token points the same way (rank collapse), about 0 for unrelated tokens; all-zero tokens carry no
    direction and are left out (NaN when a whole batch has fewer than two non-zero tokens per sequence)."""
    h = h.detach().double().flatten(0, -3) if h.dim() > 2 else h.detach().double().unsqueeze(0)
    norms = h.norm(dim=-1)
    live = (norms > 0).double()
    unit = h / norms.clamp_min(1e-300).unsqueeze(-1)
    gram = (unit @ unit.transpose(-2, -1)) * live.unsqueeze(-1) * live.unsqueeze(-2)
    count = live.sum(dim=-1)
    similarity = (gram.sum(dim=(-2, -1)) - count) / (count * (count - 1))  # NaN (0/0) without two live tokens
    return similarity.nanmean().item()


def _store_norm(pending: Dict[str, float], key: str):
    def hook(grad: Tensor) -> None:
        pending[key] = grad.detach().double().norm().item()

    return hook


def _norm(tensors: Sequence[Tensor]) -> float:
    if not tensors:
        return 0.0
    return math.sqrt(sum(t.detach().double().pow(2).sum().item() for t in tensors))


@torch.no_grad()
def attention_stats(kind_name: str, q: Tensor, k: Tensor, v: Tensor) -> Dict[str, float]:
    """Statistics of one causal attention call of kind ``kind_name`` on (B, H, N, D) q, k, v."""
    kind = get_kind(kind_name)
    if kind.is_linear:
        _, (kv, _) = reference.linear_attention(q, k, v, kind.feature_map, True, kind.normalize)
        a = reference.default_scale(q.shape[-1]) * reference.feature_map(q, kind.feature_map)
        z = reference.feature_map(k, kind.feature_map).cumsum(dim=2)
        den = (a * z).sum(dim=-1)
        return {"state_norm": kv.double().norm().item(), "den_min": den.min().item(), "den_max": den.max().item()}
    weights = kind.weights(q, k, True, None).double()
    visible = reference.causal_mask(q.shape[2], k.shape[2], q.device)
    rows = weights / weights.sum(dim=-1, keepdim=True).clamp_min(1e-300)
    entropy = -(rows * rows.clamp_min(1e-300).log()).sum(dim=-1)
    stats = {"row_entropy": entropy.mean().item()}
    if kind.activation == "relu":
        stats["zero_fraction"] = ((weights == 0) & visible).sum().item() / (visible.sum().item() * q.shape[0] * q.shape[1])
    return stats


def _per_seed(records: List) -> List[List[Dict]]:
    """A kind's records, or a list of them per seed, as a list per seed."""
    return records if records and isinstance(records[0], list) else [records]


def plot_layer_norms(records_by_kind: Dict[str, List], path: str, key: str = "param_grad_norm",
                     log: bool = True) -> None:
    """One line per kind: ``key`` per layer, averaged over the recorded steps. ``records_by_kind`` maps a
    kind to its records, or to a list of records per seed: then the line is the mean over seeds and a
    band shows their min-max range. On the log axis exact zeros are marked, not dropped."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(7, 4))
    depth = 0
    for i, (kind, records) in enumerate(records_by_kind.items()):
        runs = [run for run in _per_seed(records) if run]
        if not runs:
            continue
        layers = list(runs[0][0]["layers"])
        depth = max(depth, len(layers))
        per_seed = [[sum(r["layers"][name].get(key, 0.0) for r in run) / len(run) for name in layers] for run in runs]
        band(ax, list(range(len(layers))), *seed_band(per_seed), label=kind, log=log, **line_style(i))
    ax.set_xticks(range(depth))
    ax.set_xlabel("layer (input side = 0)")
    ax.set_ylabel(key.replace("_", " "))
    if log:
        ax.set_yscale("log")
    ax.set_title(f"{key.replace('_', ' ')} per layer, mean over recorded steps")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def plot_over_steps(records_by_kind: Dict[str, List], path: str, key: str = "param_grad_norm") -> None:
    """One line per kind: ``key`` of the first layer over the training steps (log scale; records per
    seed as in :func:`plot_layer_norms` give the mean and a min-max band)."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(7, 4))
    for i, (kind, records) in enumerate(records_by_kind.items()):
        runs = [run for run in _per_seed(records) if run]
        if not runs:
            continue
        first = list(runs[0][0]["layers"])[0]
        length = min(len(run) for run in runs)
        per_seed = [[r["layers"][first].get(key, 0.0) for r in run[:length]] for run in runs]
        steps = [r["step"] for r in runs[0][:length]]
        band(ax, steps, *seed_band(per_seed), label=kind, log=True, **line_style(i, marker=False))
    ax.set_xlabel("step")
    ax.set_ylabel(f"{key.replace('_', ' ')}, first layer")
    ax.set_yscale("log")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def depth_sweep(kinds: Sequence[str], depths: Sequence[int] = (2, 4, 8, 16, 32, 64), dim: int = 64,
                heads: int = 4, seq_len: int = 64, batch: int = 4, seed: int = 0,
                device: Optional[str] = None) -> List[Dict]:
    """At initialisation, for stacks of each depth with and without residual connections + LayerNorm,
    the ratio of the first layer's parameter-gradient norm to the last layer's, per kind, and the
    :func:`token_similarity` of the last layer's output.

    A ratio far below 1 means gradients vanish towards the input; far above 1, they explode. A
    similarity near 1 means the tokens have collapsed onto one direction (rank collapse)."""
    results = []
    for kind in kinds:
        for residual in (True, False):
            for depth in depths:
                torch.manual_seed(seed)
                layers = nn.ModuleList(
                    DecoderBlock(dim, heads, kind) if residual else _PlainAttention(dim, heads, kind)
                    for _ in range(depth)
                ).to(device)
                x = torch.randn(batch, seq_len, dim, device=device)
                h = x
                for layer in layers:
                    h = layer(h)
                target = torch.randn(h.shape, generator=torch.Generator().manual_seed(seed + 1)).to(h.device)
                (h * target).mean().backward()
                first, last = _norm([p.grad for p in layers[0].parameters()]), _norm(
                    [p.grad for p in layers[-1].parameters()]
                )
                ratio = first / last if last > 0 else float("nan")
                results.append({"kind": kind, "residual": residual, "depth": depth, "first_over_last": ratio,
                                "token_similarity": token_similarity(h)})
    return results


def plot_depth_sweep(results: List[Dict], path: str, key: str = "first_over_last") -> None:
    """``key`` of :func:`depth_sweep` against depth, one line per kind, plain and residual panels: the
    first/last-layer gradient-norm ratio (log axis, zeros marked) or ``"token_similarity"`` (linear
    axis from 0 to 1: the rank-collapse figure)."""
    plt = pyplot()
    log = key != "token_similarity"
    fig, axes = plt.subplots(1, 2, figsize=(11, 4), sharey=True)
    for ax, residual in zip(axes, (False, True)):
        for i, kind in enumerate(dict.fromkeys(r["kind"] for r in results)):
            points = [r for r in results if r["kind"] == kind and r["residual"] == residual]
            depths, values = [r["depth"] for r in points], [r[key] for r in points]
            if log:
                log_line(ax, depths, values, label=kind, **line_style(i))
            else:
                ax.plot(depths, values, label=kind, **line_style(i))
        ax.set_xscale("log", base=2)
        if log:
            ax.set_yscale("log")
        else:
            ax.set_ylim(-0.05, 1.05)
        ax.set_xlabel("layers")
        ax.set_title("residual + LayerNorm" if residual else "no residual (LayerNorm only)")
        ax.legend(fontsize=8)
    axes[0].set_ylabel("grad norm, first layer / last layer" if log
                       else "mean cosine similarity between tokens, last layer")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


class _PlainAttention(nn.Module):
    """A layer without residual connection: attn(LN(x)) (LN keeps each layer's input scale fixed)."""

    def __init__(self, dim: int, heads: int, kind: str) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(dim)
        self.attn = CausalSelfAttention(dim, heads, kind)

    def forward(self, x: Tensor) -> Tensor:
        return self.attn(self.norm(x))
