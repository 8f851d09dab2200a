"""Train the same small decoder-only transformer per attention kind and seed, and compare the kinds.

    python -m actattn.compare                      # the default: byte-level LM, all six kinds, 3 seeds, CPU, minutes
    python -m actattn.compare --quick              # under a minute
    python -m actattn.compare --preset gpu         # longer sequences, a bigger model, lengths to 64 K (CUDA)
    python -m actattn.compare --task text --text corpus.txt --device cuda
    torchrun --nproc_per_node=2 -m actattn.compare  # data-parallel (gloo on CPU, NCCL on CUDA)

For one seed every kind gets the same initial weights, the same batches and the same hyper-parameters
(batches are a function of (seed, step)); each kind runs once per seed. Then, in the same process, the
depth sweep at initialisation (actattn.gradflow) and the cost of one attention layer against sequence
length (actattn.cost). Writes report.md (actattn.report), report.json and PNG figures to --out,
checkpoints every --checkpoint-every steps (atomically, keeping the previous one: actattn.checkpoint),
and with --resume continues each run exactly where it stopped, from the newest intact checkpoint.
"""


from __future__ import annotations

import argparse
import importlib.util
import math
import os
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
from .cost import cost_against_length
from .gradflow import GradientFlowRecorder, depth_sweep
from .nn.blocks import DecoderLM
from .nn.kinds import KINDS
from .peak_memory import PeakMemory
from .report import steady_steps, step_time_summary, write_report
from .tasks import IGNORE, MQAR, TextLM

PRESETS = {
    # The default fits the 2-core development machine in a few minutes: three seeds of 300 steps at batch 16
    # cost a little less than one seed of 600 steps at batch 32 did, and the spread over seeds is what makes
    # the table readable.
    "default": dict(device="cpu", seeds=3, steps=300, batch_size=16, seq_len=64, dim=64, heads=4, layers=4,
                    mqar_pairs=8, eval_every=50, record_every=50, sweep_depths=[2, 4, 8, 16, 32, 64],
                    cost_lengths=[32, 64, 128, 256, 512, 1024, 2048, 4096, 8192, 16384]),
    "quick": dict(device="cpu", seeds=1, steps=30, batch_size=8, seq_len=32, dim=32, heads=2, layers=2,
                  mqar_pairs=8, eval_every=10, record_every=10, sweep_depths=[2, 4], cost_lengths=[64, 128]),
    # For a GPU machine: a model and sequences where attention's cost matters, MQAR with enough pairs and
    # steps to leave the recall plateau, and lengths up to 64 K for the cost figure.
    "gpu": dict(device="cuda", seeds=3, steps=3000, batch_size=64, seq_len=512, dim=256, heads=4, layers=6,
                mqar_pairs=32, eval_every=250, record_every=100, sweep_depths=[2, 4, 8, 16, 32, 64],
                cost_lengths=[512, 1024, 2048, 4096, 8192, 16384, 32768, 65536]),
}


def _preset_default(key: str) -> str:
    """How --help shows an option whose default comes from the preset."""
    show = lambda value: " ".join(map(str, value)) if isinstance(value, list) else value  # noqa: E731
    values = "; ".join(f"{name} {show(preset[key])}" for name, preset in PRESETS.items() if name != "default")
    return f"(default: {show(PRESETS['default'][key])}; preset {values})"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m actattn.compare",
        description="Train the same small decoder-only transformer per attention kind and seed (for one seed, "
        "the same initial weights, batches and hyper-parameters for every kind) and write a report with figures "
        "comparing loss, held-out metric, step time, memory and gradient flow over the seeds, plus a depth sweep "
        "and the cost of one attention layer against sequence length.",
    )
    parser.add_argument("--task", choices=["text", "mqar"], default="text",
                        help="text: byte-level language modelling; mqar: multi-query associative recall "
                             "(default: %(default)s)")
    parser.add_argument("--text", type=Path,
                        help="text file for --task text (default: the sources of Python's standard library)")
    parser.add_argument("--kinds", nargs="+", choices=list(KINDS), default=list(KINDS), metavar="KIND",
                        help=f"attention kinds to train, from {', '.join(KINDS)} (default: all)")
    parser.add_argument("--preset", choices=list(PRESETS), default="default",
                        help="sizes, steps, seeds and lengths of the run: default (a few minutes on 2 CPU cores), "
                             "quick (under a minute), gpu (needs CUDA); the options below override single values "
                             "(default: %(default)s)")
    parser.add_argument("--quick", action="store_const", dest="preset", const="quick",
                        help="the same as --preset quick (default: off)")
    parser.add_argument("--seeds", type=int,
                        help="runs per kind, seeds --seed, --seed + 1, ...: the report shows mean and min-max "
                             "over them " + _preset_default("seeds"))
    parser.add_argument("--steps", type=int, help="training steps per kind " + _preset_default("steps"))
    parser.add_argument("--batch-size", type=int,
                        help="global batch size, split across processes " + _preset_default("batch_size"))
    parser.add_argument("--seq-len", type=int, help="tokens per sequence " + _preset_default("seq_len"))
    parser.add_argument("--dim", type=int, help="model width " + _preset_default("dim"))
    parser.add_argument("--heads", type=int, help="attention heads " + _preset_default("heads"))
    parser.add_argument("--layers", type=int, help="decoder blocks " + _preset_default("layers"))
    parser.add_argument("--lr", type=float, default=3e-3, help="AdamW learning rate (default: %(default)s)")
    parser.add_argument("--mqar-pairs", type=int,
                        help="key-value pairs per sequence for --task mqar " + _preset_default("mqar_pairs"))
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
                        help="first seed; a seed sets the initial weights and the batch order, the same for every "
                             "kind (default: %(default)s)")
    parser.add_argument("--device", help="cpu or cuda " + _preset_default("device"))
    parser.add_argument("--out", type=Path, default=Path("out/compare"),
                        help="directory of the report, plots and checkpoints (default: %(default)s)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars (default: shown)")
    parser.add_argument("--sweep-depths", type=int, nargs="*", metavar="DEPTH",
                        help="depths of the gradient-flow depth sweep at initialisation, none to skip "
                             + _preset_default("sweep_depths"))
    parser.add_argument("--cost-lengths", type=int, nargs="*", metavar="N",
                        help="sequence lengths of the cost-against-length measurement, none to skip "
                             + _preset_default("cost_lengths"))
    parser.add_argument("--cost-max-seconds", type=float, default=20.0,
                        help="a kind's cost measurement stops at the first length whose single call takes longer "
                             "(default: %(default)s)")
    return parser


def parse_args(argv=None) -> argparse.Namespace:
    parser = build_parser()
    args = parser.parse_args(argv)
    args.command = shlex.join(["python", "-m", "actattn.compare", *(sys.argv[1:] if argv is None else argv)])
    for key, value in PRESETS[args.preset].items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    if args.seeds < 1:
        parser.error(f"--seeds must be at least 1, got {args.seeds}")
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        parser.error(f"--device {args.device}" + (" (from --preset gpu)" if args.preset == "gpu" else "")
                     + " needs CUDA, and torch.cuda.is_available() is False here; use --preset default on CPU")
    return args


def make_task(args, seed: int):
    if args.task == "mqar":
        # Keys and values each take half the vocabulary: room for every pair with keys to spare.
        vocab = max(64, 8 * args.mqar_pairs)
        return MQAR(vocab_size=vocab, seq_len=args.seq_len, num_pairs=args.mqar_pairs, seed=seed)
    return TextLM(args.text.read_bytes() if args.text else None, seq_len=args.seq_len, seed=seed)


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


def train_kind(kind: str, seed: int, args, task, env: Distributed) -> Dict:
    """Trains ``kind`` from ``seed``'s initial weights on ``task`` (whose batches follow the same seed)."""
    torch.manual_seed(seed)  # the same initial weights for every kind
    model = DecoderLM(task.vocab_size, args.dim, args.heads, args.layers, max_len=args.seq_len, attention=kind)
    model.to(env.device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=0.01)
    checkpoint = args.out / "checkpoints" / f"{kind}-seed{seed}.pt"
    history = {"loss": [], "step_ms": [], "eval": [], "gradflow": []}
    start = 0
    state = checkpoints.load(checkpoint, map_location=env.device) if args.resume else None
    if state is not None:
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        history, start = state["history"], state["step"]
    elif args.resume and env.main:
        print(f"actattn.compare: no usable checkpoint for {kind} seed {seed} in {checkpoint.parent}; training it "
              "from step 0", file=sys.stderr)
    trained = torch.nn.parallel.DistributedDataParallel(model) if env.world > 1 else model
    recorder = GradientFlowRecorder(model)
    # Memory is measured from the second step on: the first one allocates the optimizer state and pays
    # for first touches of code and buffers, the same for every kind.
    peak = PeakMemory(env.device)

    progress = range(start, args.steps)
    if env.main and not args.no_progress:
        from tqdm import tqdm

        label = f"{kind} seed {seed}"
        progress = tqdm(progress, desc=f"{label:>22}", initial=start, total=args.steps, leave=True)
    for step in progress:
        if step == start + 1:
            peak.start()
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
    peak.stop()
    recorder.detach()
    return summarize(kind, seed, history, task, peak.mib)


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


def summarize(kind: str, seed: int, history: Dict, task, peak_memory_mib) -> Dict:
    """One run's numbers; :mod:`actattn.report` gathers them per kind over the seeds."""
    tail = history["loss"][-max(1, len(history["loss"]) // 10) :]
    ratios = []
    for record in history["gradflow"]:
        norms = [layer["param_grad_norm"] for layer in record["layers"].values()]
        if norms and norms[-1] > 0:
            ratios.append(norms[0] / norms[-1])
    return {
        "kind": kind,
        "seed": seed,
        "final_loss": sum(tail) / len(tail),
        f"final_{task.metric}": history["eval"][-1][task.metric] if history["eval"] else None,
        **step_time_summary(steady_steps(history["step_ms"])),
        # Other jobs on the machine inflate step times: the 1-minute load average when the run finished.
        "load_average": os.getloadavg()[0],
        "peak_memory_mib": peak_memory_mib,
        "grad_norm_first_over_last_layer": statistics.mean(ratios) if ratios else None,
        "history": history,
    }


def require_compare_extra() -> None:
    """The trainer's figures and progress bars need packages the ops do not: say how to get them."""
    missing = [name for name in ("matplotlib", "tqdm") if importlib.util.find_spec(name) is None]
    if missing:
        raise SystemExit(f"actattn.compare needs {' and '.join(missing)}, which the core package does not install: "
                         "pip install 'actattn[compare]'")


def main(argv=None) -> List[Dict]:
    """Runs the comparison; returns one result per (kind, seed), kinds in order, each kind's seeds together."""
    args = parse_args(argv)
    require_compare_extra()
    env = Distributed(args.device)
    try:
        seeds = range(args.seed, args.seed + args.seeds)
        tasks = {seed: make_task(args, seed) for seed in seeds}
        runs = [train_kind(kind, seed, args, tasks[seed], env) for kind in args.kinds for seed in seeds]
        if env.main:
            sweep, costs = [], []
            if args.sweep_depths:
                sweep = depth_sweep(args.kinds, args.sweep_depths, dim=args.dim, heads=args.heads,
                                    seq_len=args.seq_len, seed=args.seed, device=str(env.device))
            if args.cost_lengths:
                costs = cost_against_length(args.kinds, args.cost_lengths, args.heads, args.dim // args.heads,
                                            device=str(env.device), max_seconds=args.cost_max_seconds,
                                            seed=args.seed)
            report = write_report(args, tasks[args.seed], runs, sweep, costs)
            print(f"\nreport: {report}")
            print(report.read_text())
        return runs
    finally:
        env.close()


def cli() -> None:
    """The console script ``actattn-compare``: exits 0 on success (``main`` returns the runs, which a
    console script would take for an exit status)."""
    main()


if __name__ == "__main__":
    cli()
