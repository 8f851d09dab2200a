"""Train the same small decoder-only transformer once per attention kind and compare them.

    python -m actattn.compare                      # the default: byte-level LM, all six kinds, CPU, minutes
    python -m actattn.compare --quick              # under a minute
    python -m actattn.compare --task text --text corpus.txt --device cuda
    torchrun --nproc_per_node=2 -m actattn.compare  # data-parallel (gloo on CPU, NCCL on CUDA)

Every kind gets the same initial weights, the same batches and the same hyper-parameters (batches are
a function of (seed, step)). Writes report.md, report.json and PNG plots to --out, checkpoints every
--checkpoint-every steps (atomically, keeping the previous one: actattn.checkpoint), and with --resume
continues each kind exactly where it stopped, from the newest intact checkpoint.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import resource
import shlex
import statistics
import sys
import time
from pathlib import Path
from typing import Dict, List

import torch
import torch.distributed as dist
import torch.nn.functional as F

from . import checkpoint as checkpoints
from .gradflow import GradientFlowRecorder, depth_sweep, plot_depth_sweep, plot_layer_norms, plot_over_steps
from .nn.blocks import DecoderLM
from .nn.kinds import KINDS
from .tasks import IGNORE, MQAR, TextLM

PRESETS = {
    # name: (steps, batch_size, seq_len, dim, heads, layers, eval_every, record_every)
    "default": dict(steps=600, batch_size=32, seq_len=64, dim=64, heads=4, layers=4, eval_every=100,
                    record_every=50, sweep_depths=[2, 4, 8, 16, 32, 64]),
    "quick": dict(steps=30, batch_size=8, seq_len=32, dim=32, heads=2, layers=2, eval_every=10, record_every=10,
                  sweep_depths=[2, 4]),
}


def _preset_default(key: str) -> str:
    """How --help shows an option whose default comes from the preset."""
    default, quick = PRESETS["default"][key], PRESETS["quick"][key]
    show = lambda value: " ".join(map(str, value)) if isinstance(value, list) else value  # noqa: E731
    return f"(default: {show(default)}; with --quick {show(quick)})"


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m actattn.compare",
        description="Train the same small decoder-only transformer once per attention kind (same initial weights, "
        "batches and hyper-parameters) and write a report with plots comparing loss, held-out metric, step time, "
        "memory and gradient flow.",
    )
    parser.add_argument("--task", choices=["text", "mqar"], default="text",
                        help="text: byte-level language modelling; mqar: multi-query associative recall "
                             "(default: %(default)s)")
    parser.add_argument("--text", type=Path,
                        help="text file for --task text (default: the sources of Python's standard library)")
    parser.add_argument("--kinds", nargs="+", choices=list(KINDS), default=list(KINDS), metavar="KIND",
                        help=f"attention kinds to train, from {', '.join(KINDS)} (default: all)")
    parser.add_argument("--quick", action="store_true",
                        help="the tiny preset: a run that finishes in under a minute (default: the full preset)")
    parser.add_argument("--steps", type=int, help="training steps per kind " + _preset_default("steps"))
    parser.add_argument("--batch-size", type=int,
                        help="global batch size, split across processes " + _preset_default("batch_size"))
    parser.add_argument("--seq-len", type=int, help="tokens per sequence " + _preset_default("seq_len"))
    parser.add_argument("--dim", type=int, help="model width " + _preset_default("dim"))
    parser.add_argument("--heads", type=int, help="attention heads " + _preset_default("heads"))
    parser.add_argument("--layers", type=int, help="decoder blocks " + _preset_default("layers"))
    parser.add_argument("--lr", type=float, default=3e-3, help="AdamW learning rate (default: %(default)s)")
    parser.add_argument("--mqar-pairs", type=int, default=8,
                        help="key-value pairs per sequence for --task mqar (default: %(default)s)")
    parser.add_argument("--eval-every", type=int,
                        help="steps between held-out evaluations " + _preset_default("eval_every"))
    parser.add_argument("--record-every", type=int,
                        help="steps between gradient-flow records " + _preset_default("record_every"))
    parser.add_argument("--checkpoint-every", type=int, default=100,
                        help="steps between checkpoints, 0 for none (default: %(default)s)")
    parser.add_argument("--resume", action="store_true",
                        help="continue each kind from its newest intact checkpoint in --out (damaged ones are "
                             "reported and skipped; default: start afresh)")
    parser.add_argument("--seed", type=int, default=0,
                        help="seed of the initial weights and the batch order, the same for every kind "
                             "(default: %(default)s)")
    parser.add_argument("--device", default="cpu", help="cpu or cuda (default: %(default)s)")
    parser.add_argument("--out", type=Path, default=Path("out/compare"),
                        help="directory of the report, plots and checkpoints (default: %(default)s)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars (default: shown)")
    parser.add_argument("--sweep-depths", type=int, nargs="*", metavar="DEPTH",
                        help="depths of the gradient-flow depth sweep at initialisation, none to skip "
                             + _preset_default("sweep_depths"))
    args = parser.parse_args(argv)
    args.command = shlex.join(["python", "-m", "actattn.compare", *(sys.argv[1:] if argv is None else argv)])
    for key, value in PRESETS["quick" if args.quick else "default"].items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    return args


def make_task(args):
    if args.task == "mqar":
        return MQAR(vocab_size=64, seq_len=args.seq_len, num_pairs=args.mqar_pairs, seed=args.seed)
    return TextLM(args.text.read_bytes() if args.text else None, seq_len=args.seq_len, seed=args.seed)


class Distributed:
    """This process's place in a torchrun job (or a single process)."""

    def __init__(self, device: str) -> None:
        self.world = int(os.environ.get("WORLD_SIZE", "1"))
        self.rank = int(os.environ.get("RANK", "0"))
        self.device = torch.device(device)
        if self.world > 1:
            if self.device.type == "cuda":
                self.device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
                torch.cuda.set_device(self.device)
            dist.init_process_group("nccl" if self.device.type == "cuda" else "gloo")

    @property
    def main(self) -> bool:
        return self.rank == 0

    def mean(self, value: float) -> float:
        if self.world == 1:
            return value
        t = torch.tensor([value], dtype=torch.float64, device=self.device)
        dist.all_reduce(t)
        return t.item() / self.world

    def shard(self, tensor: torch.Tensor) -> torch.Tensor:
        if tensor.shape[0] % self.world:
            raise ValueError(f"batch size {tensor.shape[0]} is not divisible by {self.world} processes")
        per = tensor.shape[0] // self.world
        return tensor[self.rank * per : (self.rank + 1) * per]

    def close(self) -> None:
        if self.world > 1:
            dist.destroy_process_group()


def loss_and_metric(model, task, inputs, targets):
    logits = model(inputs)
    loss = F.cross_entropy(logits.flatten(0, 1), targets.flatten(), ignore_index=IGNORE)
    if task.metric == "accuracy":
        answered = targets != IGNORE
        metric = (logits.argmax(-1)[answered] == targets[answered]).float().mean()
    else:
        metric = loss.detach() / math.log(2)  # bits per byte
    return loss, metric.item()


def train_kind(kind: str, args, task, env: Distributed) -> Dict:
    torch.manual_seed(args.seed)  # the same initial weights for every kind
    model = DecoderLM(task.vocab_size, args.dim, args.heads, args.layers, max_len=args.seq_len, attention=kind)
    model.to(env.device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=0.01)
    checkpoint = args.out / "checkpoints" / f"{kind}.pt"
    history = {"loss": [], "step_ms": [], "eval": [], "gradflow": []}
    start = 0
    state = checkpoints.load(checkpoint, map_location=env.device) if args.resume else None
    if state is not None:
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        history, start = state["history"], state["step"]
    elif args.resume and env.main:
        print(f"actattn.compare: no usable checkpoint for {kind} in {checkpoint.parent}; training it from step 0",
              file=sys.stderr)
    trained = torch.nn.parallel.DistributedDataParallel(model) if env.world > 1 else model
    recorder = GradientFlowRecorder(model)
    if env.device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(env.device)

    progress = range(start, args.steps)
    if env.main and not args.no_progress:
        from tqdm import tqdm

        progress = tqdm(progress, desc=f"{kind:>15}", initial=start, total=args.steps, leave=True)
    for step in progress:
        inputs, targets = (env.shard(t).to(env.device) for t in task.batch(step, args.batch_size))
        recorder.enabled = step % args.record_every == 0
        started = time.perf_counter()
        loss, _ = loss_and_metric(trained, task, inputs, targets)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        if recorder.enabled:
            history["gradflow"].append(recorder.step(step))
        optimizer.step()
        if env.device.type == "cuda":
            torch.cuda.synchronize(env.device)
        history["step_ms"].append(1e3 * (time.perf_counter() - started))
        history["loss"].append(env.mean(loss.item()))
        if (step + 1) % args.eval_every == 0 or step + 1 == args.steps:
            history["eval"].append({"step": step + 1, task.metric: evaluate(model, task, args, env)})
        if hasattr(progress, "set_postfix"):
            progress.set_postfix(loss=f"{history['loss'][-1]:.3f}")
        if args.checkpoint_every > 0 and (step + 1) % args.checkpoint_every == 0 and env.main:
            checkpoints.save({"model": model.state_dict(), "optimizer": optimizer.state_dict(), "history": history,
                              "step": step + 1}, checkpoint)
    recorder.detach()
    return summarize(kind, history, task, env)


@torch.no_grad()
def evaluate(model, task, args, env: Distributed, batches: int = 4) -> float:
    """The task's metric on fixed held-out batches (steps no training batch uses)."""
    model.eval()
    values = []
    for i in range(batches):
        inputs, targets = (t.to(env.device) for t in task.batch(10**9 + i, args.batch_size))
        values.append(loss_and_metric(model, task, inputs, targets)[1])
    model.train()
    return sum(values) / len(values)


def step_time_summary(step_ms: List[float]) -> Dict:
    """Median and 10-90 % range of the step times after warm-up (the first 10 % of steps, at least one)."""
    if not step_ms:
        return {"ms_per_step": None, "ms_per_step_p10": None, "ms_per_step_p90": None}
    steady = step_ms[max(1, len(step_ms) // 10) :] or step_ms
    deciles = statistics.quantiles(steady, n=10, method="inclusive") if len(steady) > 1 else steady * 9
    return {"ms_per_step": statistics.median(steady), "ms_per_step_p10": deciles[0], "ms_per_step_p90": deciles[-1]}


def summarize(kind: str, history: Dict, task, env: Distributed) -> Dict:
    tail = history["loss"][-max(1, len(history["loss"]) // 10) :]
    records = history["gradflow"]
    ratios = []
    for record in records:
        norms = [layer["param_grad_norm"] for layer in record["layers"].values()]
        if norms and norms[-1] > 0:
            ratios.append(norms[0] / norms[-1])
    peak = (
        torch.cuda.max_memory_allocated(env.device) / 2**20
        if env.device.type == "cuda"
        else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    )
    return {
        "kind": kind,
        "final_loss": sum(tail) / len(tail),
        f"final_{task.metric}": history["eval"][-1][task.metric] if history["eval"] else None,
        **step_time_summary(history["step_ms"]),
        # Other jobs on the machine inflate step times: the 1-minute load average when the kind finished.
        "load_average": os.getloadavg()[0],
        "peak_memory_mib": peak,
        "grad_norm_first_over_last_layer": statistics.mean(ratios) if ratios else None,
        "history": history,
    }


def write_report(args, task, results: List[Dict], sweep: List[Dict]) -> Path:
    args.out.mkdir(parents=True, exist_ok=True)
    config = {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()}
    metric = f"final_{task.metric}"
    (args.out / "report.json").write_text(
        json.dumps({"config": config, "results": results, "depth_sweep": sweep}, indent=1)
    )
    memory = "peak GPU memory (MiB)" if args.device.startswith("cuda") else "process peak RSS so far (MiB)"
    lines = [
        "# actattn activation comparison",
        "",
        f"Made by `{args.command}`.",
        "",
        f"Task `{args.task}`, {args.steps} steps, global batch {args.batch_size}, seq_len {args.seq_len}, "
        f"dim {args.dim}, {args.heads} heads, {args.layers} layers, lr {args.lr}, seed {args.seed}, "
        f"device {args.device}. Same initial weights and batches for every kind.",
        "",
        f"| kind | final loss | {metric.replace('_', ' ')} | ms / step (10–90 %) | load | {memory} | "
        "grad norm first / last layer |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in results:
        value = r[metric]
        ratio = r["grad_norm_first_over_last_layer"]
        lines.append(
            f"| {r['kind']} | {r['final_loss']:.4f} | {'n/a' if value is None else f'{value:.4f}'} | "
            f"{r['ms_per_step']:.1f} ({r['ms_per_step_p10']:.1f}–{r['ms_per_step_p90']:.1f}) | "
            f"{r['load_average']:.1f} | {r['peak_memory_mib']:.0f} | {'n/a' if ratio is None else f'{ratio:.3f}'} |"
        )
    cores = os.cpu_count()
    busy = [r["kind"] for r in results if r["load_average"] > cores + 0.5]
    lines += [
        "",
        "Final loss: mean over the last 10 % of steps. ms / step: median and 10–90 % range of the step",
        "times after the first 10 % (warm-up), wall clock, one process. Load: the machine's 1-minute load",
        f"average when the kind finished, against its {cores} cores"
        + (f"; **above that for {', '.join(busy)}: other jobs shared the machine, their times are inflated**."
           if busy else "."),
        "Gradient-norm ratio: parameter-gradient norm of the first block over the last, averaged over the",
        "recorded steps (far below 1: vanishing towards the input; far above: exploding).",
        "",
        "![loss](loss.png) ![metric](metric.png)",
        "![gradient norm per layer](grad_norm_per_layer.png) ![gradient norm over steps](grad_norm_over_steps.png)",
    ]
    if sweep:
        lines += [
            "",
            "## Depth sweep at initialisation",
            "",
            f"Gradient norm of the first layer over the last, for stacks of blocks (dim {args.dim}, {args.heads} "
            "heads) on random input, with and without residual connections (LayerNorm in both).",
            "",
            *sweep_table(sweep, "first_over_last", "{:.3g}"),
            "",
            "Rank collapse in the same stacks: mean cosine similarity between different tokens' outputs of the",
            "last layer (1: every token points the same way; about 0: unrelated tokens).",
            "",
            *sweep_table(sweep, "token_similarity", "{:.3f}"),
            "",
            "![depth sweep](depth_sweep.png)",
        ]
    (args.out / "report.md").write_text("\n".join(lines) + "\n")
    plot_curves(results, args.out, task.metric)
    records = {r["kind"]: r["history"]["gradflow"] for r in results}
    plot_layer_norms(records, str(args.out / "grad_norm_per_layer.png"))
    plot_over_steps(records, str(args.out / "grad_norm_over_steps.png"))
    if sweep:
        plot_depth_sweep(sweep, str(args.out / "depth_sweep.png"))
    return args.out / "report.md"


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


def plot_curves(results: List[Dict], out: Path, metric: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    # Six kinds end close together: line styles as well as colours keep each curve visible.
    styles = ["-", "--", "-.", ":"]
    fig, ax = plt.subplots(figsize=(7, 4))
    for i, r in enumerate(results):
        losses = r["history"]["loss"]
        window = max(1, len(losses) // 50)
        smooth = [sum(losses[max(0, i - window + 1) : i + 1]) / len(losses[max(0, i - window + 1) : i + 1])
                  for i in range(len(losses))]
        ax.plot(smooth, label=r["kind"], linestyle=styles[i % len(styles)])
    ax.set_xlabel("step")
    ax.set_ylabel("training loss (smoothed)")
    ax.legend()
    fig.tight_layout()
    fig.savefig(out / "loss.png", dpi=120)
    plt.close(fig)

    markers = ["o", "s", "^", "v", "D", "x"]
    fig, ax = plt.subplots(figsize=(7, 4))
    for i, r in enumerate(results):
        points = r["history"]["eval"]
        ax.plot([p["step"] for p in points], [p[metric] for p in points], marker=markers[i % len(markers)],
                linestyle=styles[i % len(styles)], label=r["kind"])
    ax.set_xlabel("step")
    ax.set_ylabel(f"held-out {metric.replace('_', ' ')}")
    ax.legend()
    fig.tight_layout()
    fig.savefig(out / "metric.png", dpi=120)
    plt.close(fig)


def main(argv=None) -> List[Dict]:
    args = parse_args(argv)
    env = Distributed(args.device)
    try:
        task = make_task(args)
        results = [train_kind(kind, args, task, env) for kind in args.kinds]
        if env.main:
            sweep = []
            if args.sweep_depths:
                sweep = depth_sweep(args.kinds, args.sweep_depths, dim=args.dim, heads=args.heads,
                                    seq_len=args.seq_len, seed=args.seed, device=str(env.device))
            report = write_report(args, task, results, sweep)
            print(f"\nreport: {report}")
            print(report.read_text())
        return results
    finally:
        env.close()


if __name__ == "__main__":
    main()
