"""The comparison's report: statistics over seeds, report.md / report.json, and the figures.

Every number a kind gets in the table is a mean over its seeds with the min-max range beside it, so a
reader can tell a difference between kinds from the spread of one kind over seeds.
"""

from __future__ import annotations

import json
import os
import statistics
from pathlib import Path
from typing import Dict, List, Optional, Sequence

from . import cost
from .nn.kinds import get_kind
from .gradflow import plot_depth_sweep, plot_layer_norms, plot_over_steps
from .plots import band, line_style, pyplot, seed_band

SPREAD_KEYS = ("final_loss", "grad_norm_first_over_last_layer")


def spread(values: Sequence[Optional[float]]) -> Optional[Dict[str, float]]:
    """Mean, sample standard deviation (0 for one value), min and max of the values that are not None."""
    values = [v for v in values if v is not None]
    if not values:
        return None
    return {"mean": statistics.fmean(values), "std": statistics.stdev(values) if len(values) > 1 else 0.0,
            "min": min(values), "max": max(values)}


def steady_steps(step_ms: List[float]) -> List[float]:
    """Step times after warm-up: the first 10 % of steps (at least one) are left out."""
    return step_ms[max(1, len(step_ms) // 10) :] or step_ms


def step_time_summary(step_ms: List[float]) -> Dict:
    """Median and 10-90 % range of step times (already without warm-up)."""
    if not step_ms:
        return {"ms_per_step": None, "ms_per_step_p10": None, "ms_per_step_p90": None}
    deciles = statistics.quantiles(step_ms, n=10, method="inclusive") if len(step_ms) > 1 else step_ms * 9
    return {"ms_per_step": statistics.median(step_ms), "ms_per_step_p10": deciles[0], "ms_per_step_p90": deciles[-1]}


def summarize_kinds(runs: List[Dict], metric: str) -> List[Dict]:
    """One row per kind (in the order the runs came) from its runs, one per seed: the spread of the
    final loss, the held-out metric and the gradient-norm ratio; step times pooled over the seeds'
    steady steps; the highest load average and peak memory any of its seeds saw."""
    rows = []
    for kind in dict.fromkeys(r["kind"] for r in runs):
        mine = [r for r in runs if r["kind"] == kind]
        memory = [r["peak_memory_mib"] for r in mine if r["peak_memory_mib"] is not None]
        rows.append({
            "kind": kind,
            "seeds": [r["seed"] for r in mine],
            **{key: spread([r[key] for r in mine]) for key in (*SPREAD_KEYS, metric)},
            **step_time_summary([ms for r in mine for ms in steady_steps(r["history"]["step_ms"])]),
            "load_average": max(r["load_average"] for r in mine),
            "peak_memory_mib": max(memory) if memory else None,
        })
    return rows


def _number(value: Optional[float], number: str) -> str:
    return "n/a" if value is None else number.format(value)


def _mean_range(s: Optional[Dict], number: str) -> str:
    if s is None:
        return "n/a"
    mean = number.format(s["mean"])
    return mean if s["min"] == s["max"] else f"{mean} ({number.format(s['min'])}–{number.format(s['max'])})"


def _separated(rows: List[Dict], key: str, baseline: str = "softmax") -> List[str]:
    """Kinds whose min-max range of ``key`` over seeds does not overlap the baseline's."""
    base = next((r[key] for r in rows if r["kind"] == baseline), None)
    if base is None:
        return []
    return [r["kind"] for r in rows if r["kind"] != baseline and r[key] is not None
            and (r[key]["min"] > base["max"] or r[key]["max"] < base["min"])]


def write_report(args, task, runs: List[Dict], sweep: List[Dict], costs: List[Dict]) -> Path:
    """report.json (every run, history included), report.md and the figures, in ``args.out``."""
    args.out.mkdir(parents=True, exist_ok=True)
    metric = f"final_{task.metric}"
    rows = summarize_kinds(runs, metric)
    config = {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()}
    (args.out / "report.json").write_text(json.dumps(
        {"config": config, "summary": rows, "runs": runs, "depth_sweep": sweep, "cost": costs}, indent=1))
    seeds = ", ".join(map(str, rows[0]["seeds"])) if rows else ""
    lines = [
        "# actattn activation comparison",
        "",
        f"Made by `{args.command}`.",
        "",
        f"Task `{args.task}`, {args.steps} steps, global batch {args.batch_size}, seq_len {args.seq_len}, "
        f"dim {args.dim}, {args.heads} heads, {args.layers} layers, lr {args.lr}, device {args.device}, "
        f"seeds {seeds}. For one seed every kind gets the same initial weights and batches.",
        "",
        *_training_section(args, rows, metric),
    ]
    if costs:
        lines += ["", *_cost_section(args, costs)]
    if sweep:
        lines += ["", *_sweep_section(args, sweep)]
    (args.out / "report.md").write_text("\n".join(lines) + "\n")
    plot_curves(runs, args.out, task.metric)
    records = {kind: [r["history"]["gradflow"] for r in runs if r["kind"] == kind] for kind in dict.fromkeys(
        r["kind"] for r in runs)}
    plot_layer_norms(records, str(args.out / "grad_norm_per_layer.png"))
    plot_over_steps(records, str(args.out / "grad_norm_over_steps.png"))
    plot_layer_norms(records, str(args.out / "token_similarity_per_layer.png"), key="out_token_similarity",
                     log=False)
    if costs:
        cost.plot_cost(costs, str(args.out / "cost_vs_length.png"))
    if sweep:
        plot_depth_sweep(sweep, str(args.out / "depth_sweep.png"))
        plot_depth_sweep(sweep, str(args.out / "rank_collapse.png"), key="token_similarity")
    return args.out / "report.md"


def _training_section(args, rows: List[Dict], metric: str) -> List[str]:
    memory = ("peak GPU memory of a step (MiB)" if args.device.startswith("cuda")
              else "peak memory of a step (MiB)")
    lines = [
        "## Training",
        "",
        f"| kind | final loss | {metric.replace('_', ' ')} | grad norm first / last layer | "
        f"ms / step (10–90 %) | load | {memory} |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['kind']} | {_mean_range(r['final_loss'], '{:.3f}')} | {_mean_range(r[metric], '{:.3f}')} | "
            f"{_mean_range(r['grad_norm_first_over_last_layer'], '{:.3g}')} | "
            f"{r['ms_per_step']:.1f} ({r['ms_per_step_p10']:.1f}–{r['ms_per_step_p90']:.1f}) | "
            f"{r['load_average']:.1f} | {_number(r['peak_memory_mib'], '{:.0f}')} |"
        )
    cores = os.cpu_count()
    busy = [r["kind"] for r in rows if r["load_average"] > cores + 0.5]
    separated = {key: _separated(rows, key) for key in ("final_loss", metric)}
    lines += [
        "",
        "Each cell: the mean over the seeds and, in brackets, the lowest and highest seed. Final loss: the",
        "training loss averaged over the last 10 % of steps; the held-out metric on fixed batches no training",
        "step uses. Gradient-norm ratio: parameter-gradient norm of the first block over the last, averaged",
        "over the recorded steps (far below 1: vanishing towards the input; far above: exploding).",
        "ms / step: median and 10–90 % range of the step times of all seeds after each run's first 10 %",
        "(warm-up), wall clock. Load: the highest 1-minute load average at the end of a seed's run, against",
        f"the machine's {cores} cores"
        + (f"; **above that for {', '.join(busy)}: other jobs shared the machine, their times are inflated**."
           if busy else "."),
        "Memory: the most a training step held above the model, optimizer state and gradients (activations",
        "and temporaries), measured per run from its second step (allocator statistics on CUDA, resident-set",
        "high-water mark reset per run on Linux CPUs: `actattn.peak_memory`), the highest over the seeds.",
        "",
    ]
    if len(rows[0]["seeds"]) > 1 and any(r["kind"] == "softmax" for r in rows):
        for key, name in (("final_loss", "final loss"), (metric, metric.replace("_", " "))):
            apart = separated[key]
            lines.append(f"Kinds whose {name} range over seeds does not overlap softmax's: "
                         f"{', '.join(apart) if apart else 'none'}.")
        lines.append("")
    lines += [
        "![loss](loss.png) ![metric](metric.png)",
        "",
        "Training loss (smoothed) and held-out metric: mean over seeds, the band spans the lowest and highest",
        "seed.",
        "",
        "![gradient norm per layer](grad_norm_per_layer.png) ![gradient norm over steps](grad_norm_over_steps.png)",
        "",
        "Parameter-gradient norm per layer (mean over recorded steps) and of the first layer over training,",
        "log axes: an exact 0 (a dead stack) is drawn as ▼ on the bottom edge.",
        "",
        "![token similarity per layer](token_similarity_per_layer.png)",
        "",
        "Rank-collapse meter during training: the mean cosine similarity between different tokens' attention",
        "outputs per layer, averaged over the recorded steps (1: every token points the same way).",
    ]
    return lines


def _cost_section(args, costs: List[Dict]) -> List[str]:
    lengths = sorted({r["n"] for r in costs})
    kinds = list(dict.fromkeys(r["kind"] for r in costs))
    by = {(r["kind"], r["n"]): r for r in costs}
    head_dim = args.dim // args.heads

    def cell(kind, n, key, number):
        r = by.get((kind, n))
        return "—" if r is None or r[key] is None else number.format(r[key])

    lines = [
        "## Cost against sequence length",
        "",
        f"One causal attention layer, forward and backward, batch 1, {args.heads} heads of dim {head_dim} (this "
        f"model's), on {args.device}, measured in this run (`actattn.cost`): time in ms (median over timed",
        "blocks, `torch.utils.benchmark`), then the peak memory the call adds on top of its inputs in MiB",
        "(the same meter as above, reset per point). — : not measured (a kind stops once one call takes",
        f"more than {args.cost_max_seconds:g} s).",
        "",
        "| kind | " + " | ".join(f"N={n}" for n in lengths) + " |",
        "|---|" + "---|" * len(lengths),
    ]
    for kind in kinds:
        lines.append(f"| {kind} ms | " + " | ".join(cell(kind, n, "ms", "{:.3g}") for n in lengths) + " |")
    for kind in kinds:
        lines.append(f"| {kind} MiB | " + " | ".join(cell(kind, n, "memory_mib", "{:.3g}") for n in lengths) + " |")
    floor = {r["n"]: r["floor_mib"] for r in costs}
    lines.append("| output + q, k, v gradients MiB | " + " | ".join(f"{floor[n]:.3g}" for n in lengths) + " |")
    lines.append("")
    if "softmax" in kinds:
        for kind in kinds:
            if kind == "softmax" or not get_kind(kind).is_linear:
                continue
            lines.append(f"- {kind} against softmax: time {_crossover_text(cost.crossover(costs, kind, 'softmax'))}"
                         f"; {_memory_text(costs, kind, 'softmax')}.")
        lines.append("")
    lines += [
        "![cost against length](cost_vs_length.png)",
        "",
        "Time (band: quartiles over the timed blocks) and memory against N, log-log; a dotted line marks",
        "where a linear kind overtakes softmax in time. The grey band is the memory every kind must",
        "allocate, its output and the gradients of q, k and v (float32). actattn's quadratic kernels never",
        "hold the N×N matrix (they stream key blocks and recompute it in the backward), so their memory",
        "grows with N, not N², like linear attention's: against them linear attention wins time, not memory.",
    ]
    return lines


def _memory_text(costs: List[Dict], kind: str, versus: str) -> str:
    """Memory at the longest length both were measured at, against the other kind and the floor."""
    mine = {r["n"]: r for r in costs if r["kind"] == kind and r["memory_mib"] is not None}
    theirs = {r["n"]: r for r in costs if r["kind"] == versus and r["memory_mib"] is not None}
    common = sorted(set(mine) & set(theirs))
    if not common:
        return "memory not measured"
    n = common[-1]
    return (f"memory at N={n} {mine[n]['memory_mib']:.3g} MiB against {theirs[n]['memory_mib']:.3g} MiB "
            f"(the floor: {mine[n]['floor_mib']:.3g} MiB)")


def _crossover_text(where: Dict) -> str:
    if where["n"] is None:
        return "not cheaper at the longest measured length"
    if where["above"] is None:
        return f"cheaper at every measured length (from N={where['below']})"
    return f"cheaper from N ≈ {where['n']:.0f} on (between {where['above']} and {where['below']})"


def _sweep_section(args, sweep: List[Dict]) -> List[str]:
    return [
        "## Depth sweep at initialisation",
        "",
        f"Gradient norm of the first layer over the last, for stacks of blocks (dim {args.dim}, {args.heads} "
        f"heads) on random input, with and without residual connections (LayerNorm in both), seed {args.seed}.",
        "",
        *sweep_table(sweep, "first_over_last", "{:.3g}"),
        "",
        "![depth sweep](depth_sweep.png)",
        "",
        "Rank collapse in the same stacks: mean cosine similarity between different tokens' outputs of the",
        "last layer (1: every token points the same way; about 0: unrelated tokens).",
        "",
        *sweep_table(sweep, "token_similarity", "{:.3f}"),
        "",
        "![rank collapse](rank_collapse.png)",
        "",
        "Read the two figures together: a stack can keep its gradients and still collapse its tokens onto",
        "one direction, or lose its gradients while its tokens stay apart.",
    ]


def sweep_table(sweep: List[Dict], key: str, number: str) -> List[str]:
    """Markdown rows of one depth-sweep quantity: a row per kind and residual setting, a column per depth."""
    depths = sorted({r["depth"] for r in sweep})
    rows = ["| kind | residual | " + " | ".join(f"{d} layers" for d in depths) + " |",
            "|---|---|" + "---|" * len(depths)]
    for kind in dict.fromkeys(r["kind"] for r in sweep):
        for residual in (False, True):
            values = {r["depth"]: r[key] for r in sweep if r["kind"] == kind and r["residual"] == residual}
            rows.append(f"| {kind} | {'yes' if residual else 'no'} | "
                        + " | ".join(number.format(values[d]) for d in depths) + " |")
    return rows


def _smooth(values: List[float]) -> List[float]:
    window = max(1, len(values) // 50)
    return [statistics.fmean(values[max(0, i - window + 1) : i + 1]) for i in range(len(values))]


def plot_curves(runs: List[Dict], out: Path, metric: str) -> None:
    """loss.png and metric.png: per kind the mean over seeds and a min-max band."""
    plt = pyplot()
    kinds = list(dict.fromkeys(r["kind"] for r in runs))
    fig, ax = plt.subplots(figsize=(7, 4))
    for i, kind in enumerate(kinds):
        curves = [_smooth(r["history"]["loss"]) for r in runs if r["kind"] == kind]
        mean, low, high = seed_band(curves)
        band(ax, list(range(len(mean))), mean, low, high, label=kind, **line_style(i, marker=False))
    ax.set_xlabel("step")
    ax.set_ylabel("training loss (smoothed)")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out / "loss.png", dpi=120)
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(7, 4))
    for i, kind in enumerate(kinds):
        evals = [r["history"]["eval"] for r in runs if r["kind"] == kind]
        mean, low, high = seed_band([[p[metric] for p in e] for e in evals])
        if not mean:
            continue
        band(ax, [p["step"] for p in evals[0][:len(mean)]], mean, low, high, label=kind, **line_style(i))
    ax.set_xlabel("step")
    ax.set_ylabel(f"held-out {metric.replace('_', ' ')}")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out / "metric.png", dpi=120)
    plt.close(fig)
