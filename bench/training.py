"""Training benchmark: images per second of training steps of the class-conditioned CS180UNet, the spec's plain loop
against the project's `train`, in one run.

    .venv/bin/python bench/training.py [--hidden 64] [--batch 128] [--steps 8] [--objectives flow,ddpm]
                                       [--no-compile] [--device cpu] [--json PATH]

For each objective (flow matching with Adam 1e-2; DDPM, T = 300, Adam 1e-3; labels dropped with probability 0.1):

- reference: the spec's loop, written below: eager float32, contiguous tensors, plain Adam, the loss in two lines.
- train: `models.training.train` with channels-last tensors and Adam's fused kernel (where this torch has it), plus
  what it always does: the exponential moving average of the weights, and the loss checked for divergence.
- train + compile: the same with the forward pass under torch.compile (skipped with --no-compile, or with a note
  where it fails). Its first step compiles: the compile time is printed.
- train + bf16 (and + compile): bfloat16 autocast. Where the device has native bf16 (CUDA, CPUs with AMX or
  AVX512-BF16) this is what a `train` job runs (`precision: auto`), and the loops run every step; elsewhere only the
  first --bf16-steps (default 8), as oneDNN's bf16 convolutions there run several times slower than float32.
  bf16 rounding moves each step's loss a little: their losses are compared as means over the second half of the
  steps (the same batches, noise and times as the reference's), float32 loops step by step.

Every loop starts from the same weights (`build_model`, --seed), sees the same batches (one shuffle of the 4,500
training digits of mnist-5k, repeated as needed) and draws the same noise, times and dropped labels (the reference
draws them from the same generator in the same order as `train`), and gradient clipping is off in both, so their
losses agree step by step up to float rounding: the table gives the largest relative difference. The first step is
a warm-up (and the compile): images per second are over the steps after it. The loops run once each, one after
another; the load average at the start and the end is printed, as a busy machine moves the figures.
"""

import os
import sys

# Run as a script, this file's folder comes first on sys.path, where bench/queue.py would shadow the standard
# library's `queue`; put the repository root there instead (bench/ is then a namespace package).
if sys.path and os.path.abspath(sys.path[0] or ".") == os.path.dirname(os.path.abspath(__file__)):
    sys.path[0] = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # as scripts/train_shipped.py: spinning threads slow shared cores

import argparse
import contextlib
import json
import math
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from bench.sampling import load_average, machine_info, machine_lines, table
from models.datasets import ImageDataset, held_out_split, mnist_5k
from models.schedules import linear_schedule
from models.train_config import NOISE, SHUFFLE, TrainConfig, build_model, derived_seed, fused_adam_works, use_bf16
from models.training import dataset_tensors, train

TARGET_SPEEDUP = 1.5
SAME_LOSS_RTOL = 0.02  # the largest relative difference of a step's loss from the reference's
EPOCH_IMAGES = 60_000  # an MNIST-sized epoch, for the seconds-per-epoch column


class _Stop(Exception):
    pass


@dataclass
class Run:
    loop: str
    step_seconds: list[float] = field(default_factory=list)  # wall time of each step, the warm-up first
    losses: list[float] = field(default_factory=list)
    note: str = ""
    fp32: bool = True  # float32 throughout: its losses must match the reference's up to rounding
    job_default: bool = False  # what a `train` job runs on this device (bf16 autocast where it is native)

    def images_per_s(self, batch: int) -> float:
        timed = self.step_seconds[1:]
        return batch * len(timed) / sum(timed) if timed and sum(timed) > 0 else float("nan")


# ---------------------------------------------------------------------------------------------------------------------
# The spec's loop


def reference_loop(config: TrainConfig, images: torch.Tensor, labels: torch.Tensor, device: str) -> Run:
    """The spec's algorithm B.2 with classifier-free label dropping, one epoch over `images`, plain and eager."""
    run = Run("reference: eager fp32, plain Adam")
    model = build_model(config).to(device).train()
    optimizer = torch.optim.Adam(model.parameters(), lr=config.learning_rate)
    gen = torch.Generator().manual_seed(derived_seed(config.seed, NOISE))
    order = torch.randperm(len(images), generator=torch.Generator().manual_seed(derived_seed(config.seed, SHUFFLE, 0)))
    abar = linear_schedule(config.num_timesteps).alphas_cumprod
    T, B = config.num_timesteps, config.batch_size
    for i in range(len(images) // B):
        began = time.perf_counter()
        idx = order[i * B : (i + 1) * B]
        x1, c = images[idx].to(device), labels[idx].to(device)  # (B, 1, 28, 28), (B,)
        x0 = torch.randn(x1.shape, generator=gen).to(device)  # noise
        c_mask = (torch.rand(B, generator=gen) >= config.p_uncond).float().to(device)  # 0 = label dropped
        if config.objective == "ddpm":
            t = torch.randint(0, T, (B,), generator=gen)
            a = abar[t].view(B, 1, 1, 1).to(device)
            loss = F.mse_loss(model(a.sqrt() * x1 + (1 - a).sqrt() * x0, (t / T).to(device), c, c_mask), x0)
        else:
            t = torch.rand(B, generator=gen).to(device)
            tt = t.view(B, 1, 1, 1)
            loss = F.mse_loss(model((1 - tt) * x0 + tt * x1, t, c, c_mask), x1 - x0)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        run.losses.append(loss.item())
        run.step_seconds.append(time.perf_counter() - began)
    return run


# ---------------------------------------------------------------------------------------------------------------------
# The project's loop


def project_loop(
    name: str, config: TrainConfig, images: torch.Tensor, labels: torch.Tensor, device: str, steps: int | None = None
) -> Run:
    """`train` over the images, or its first `steps` steps (stopped from the hook, as a cancel is)."""
    run = Run(name)
    last = [time.perf_counter()]

    def on_batch(epoch: int, step: int, steps_per_epoch: int, loss: float) -> None:
        now = time.perf_counter()
        run.step_seconds.append(now - last[0])
        run.losses.append(loss)
        last[0] = now
        if steps is not None and len(run.losses) >= steps:
            raise _Stop

    with contextlib.suppress(_Stop):
        train(build_model(config).to(device), images, labels, config, on_batch=on_batch)
    return run


def runs_for(objective: str, args: argparse.Namespace, images: torch.Tensor, labels: torch.Tensor) -> list[Run]:
    base = TrainConfig(
        objective=objective,  # type: ignore[arg-type]
        epochs=1,
        batch_size=args.batch,
        hidden=args.hidden,
        num_classes=10,
        grad_clip=None,  # the spec's loop does not clip: step-by-step equal losses
        seed=args.seed,
    )
    device = torch.device(args.device)
    fused = fused_adam_works(device)
    fast = replace(base, channels_last=True, fused_adam=fused)
    name = f"train: channels-last, {'fused' if fused else 'for-each'} Adam, EMA"
    runs = [reference_loop(base, images, labels, args.device)]
    bf16_steps = args.bf16_steps or (args.steps if use_bf16("auto", device) else 8)
    variants = [(name, fast, None), (f"{name}, bf16", replace(fast, bf16=True), bf16_steps)]
    if args.compile:
        variants.insert(1, (f"{name}, torch.compile", replace(fast, compile=True), None))
        variants.append((f"{name}, bf16, torch.compile", replace(fast, bf16=True, compile=True), bf16_steps))
    for loop, config, steps in variants:
        try:
            run = project_loop(loop, config, images, labels, args.device, steps)
        except Exception as e:  # an inductor without a compiler, or an unsupported op: measured as skipped
            runs.append(Run(loop, note=f"skipped: {type(e).__name__}: {str(e)[:120]}"))
            continue
        run.fp32 = not config.bf16
        notes = [f"first step (compiling) {run.step_seconds[0]:.0f} s"] if config.compile else []
        if steps is not None and steps < args.steps:
            notes.append(f"timed over steps 2 to {steps} only")
        run.note = "; ".join(notes)
        run.job_default = config.bf16 == use_bf16("auto", device) and not config.compile  # a train job's default
        runs.append(run)
    return runs


# ---------------------------------------------------------------------------------------------------------------------
# Report


def max_rel_diff(a: list[float], b: list[float]) -> float:
    """Over the steps both ran."""
    return max(abs(x - y) / abs(y) for x, y in zip(a, b, strict=False))


def rows(objective: str, runs: list[Run], batch: int) -> list[list[str]]:
    ref, out = runs[0], []
    for run in runs:
        if not run.losses:
            out.append([objective, run.loop, "skipped", "", "", "", "", ""])
            continue
        speed, diff = run.images_per_s(batch), "" if run is ref else f"{max_rel_diff(run.losses, ref.losses):.1e}"
        out.append(
            [objective, run.loop, f"{speed:.1f}", f"{speed / ref.images_per_s(batch):.2f}x",
             f"{EPOCH_IMAGES / speed:.0f}", f"{run.losses[0]:.4f}", f"{run.losses[-1]:.4f} ({len(run.losses)})", diff]
        )  # fmt: skip
    return out


def mean_rel_diff(a: list[float], b: list[float]) -> float:
    """Of the mean losses over the second half of the steps both ran: bf16 rounding moves each step's loss a
    little, the same batches, noise and times make the means comparable."""
    n = min(len(a), len(b))
    tail_a, tail_b = a[n // 2 : n], b[n // 2 : n]
    return abs(sum(tail_a) - sum(tail_b)) / abs(sum(tail_b))


def targets(objective: str, runs: list[Run], batch: int) -> list[list[str]]:
    ref, measured = runs[0], [r for r in runs[1:] if r.losses]
    best = max(measured, key=lambda r: r.images_per_s(batch))
    ratio = {id(r): r.images_per_s(batch) / ref.images_per_s(batch) for r in measured}
    out = []
    for run in measured:
        if run.job_default:
            out.append(
                [
                    objective,
                    f"the train job's loop / reference ({run.loop})",
                    f"{ratio[id(run)]:.2f}x",
                    f">= {TARGET_SPEEDUP:g}x",
                    "ok" if ratio[id(run)] >= TARGET_SPEEDUP else "MISSED",
                ]
            )
    out.append([objective, f"fastest loop / reference ({best.loop})", f"{ratio[id(best)]:.2f}x", "", ""])
    fp32 = [max_rel_diff(r.losses, ref.losses) for r in measured if r.fp32]
    if fp32:
        out.append(
            [
                objective,
                "same loss at every step, float32 loops (largest relative difference)",
                f"{max(fp32):.1e}",
                f"<= {SAME_LOSS_RTOL:g}",
                "ok" if max(fp32) <= SAME_LOSS_RTOL else "MISSED",
            ]
        )
    bf16 = [mean_rel_diff(r.losses, ref.losses) for r in measured if not r.fp32]
    if bf16:
        out.append(
            [
                objective,
                "same mean loss over the second half of the steps, bf16 loops (largest rel. diff)",
                f"{max(bf16):.1e}",
                f"<= {SAME_LOSS_RTOL:g}",
                "ok" if max(bf16) <= SAME_LOSS_RTOL else "MISSED",
            ]
        )
    return out  # fmt: skip


def render(results: dict[str, list[Run]], machine: dict[str, str], args: argparse.Namespace) -> str:
    lines = machine_lines("diffusion-jobs training benchmark", machine)
    lines.append(
        f"run: class-conditioned CS180UNet, D = {args.hidden}, batch {args.batch}, {args.steps} steps (the first a "
        f"warm-up, not timed), seed {args.seed}, device {args.device}"
    )
    lines.append("")
    header = ["objective", "loop", "images/s", "vs ref", f"s per {EPOCH_IMAGES:,}", "loss step 1", "loss last (step)",
              "max rel. loss diff"]  # fmt: skip
    lines += table(header, [row for objective, runs in results.items() for row in rows(objective, runs, args.batch)])
    lines += ["", *table(["objective", "target", "measured", "target", "status"],
                         [row for o, runs in results.items() for row in targets(o, runs, args.batch)])]  # fmt: skip
    notes = [f"{o}: {r.loop}: {r.note}" for o, runs in results.items() for r in runs if r.note]
    if notes:
        lines += ["", "notes:", *(f"- {n}" for n in notes)]
    return "\n".join(lines)


def training_digits(count: int) -> tuple[torch.Tensor, torch.Tensor]:
    """`count` of mnist-5k's 4,500 training digits (the quality benchmark's held-out 500 left out), repeated as
    needed: (count, 1, 28, 28) in [0, 1] and (count,) labels."""
    data = mnist_5k()
    train_idx, _ = held_out_split(data.labels, 50)
    images, labels = dataset_tensors(ImageDataset(data.images[train_idx], data.labels[train_idx], data.class_names))
    reps = math.ceil(count / len(images))
    return images.repeat(reps, 1, 1, 1)[:count], labels.repeat(reps)[:count]


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--hidden", type=int, default=64, help="D, the UNet's hidden channels (default 64)")
    p.add_argument("--batch", type=int, default=128, help="images per step (default 128)")
    p.add_argument("--steps", type=int, default=8, help="steps per loop, the first a warm-up (default 8)")
    p.add_argument("--objectives", default="flow,ddpm", help="comma-separated (default flow,ddpm)")
    p.add_argument("--no-compile", dest="compile", action="store_false", help="skip the torch.compile loop")
    p.add_argument(
        "--bf16-steps",
        type=int,
        help="steps of the bf16 loops, the first a warm-up (default: --steps where bf16 is native, else 8)",
    )
    p.add_argument("--device", default="cpu", help="cpu (default) or cuda")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", type=Path, help="also write every figure here")
    args = p.parse_args(argv)
    if min(args.steps, args.bf16_steps or 2) < 2:
        p.error("--steps and --bf16-steps must be >= 2: the first step is a warm-up")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    machine = machine_info()
    images, labels = training_digits(args.steps * args.batch)
    results = {o: runs_for(o, args, images, labels) for o in args.objectives.split(",")}
    machine["load_average_end"] = load_average()
    print(render(results, machine, args))
    if args.json is not None:
        report: dict[str, Any] = {"machine": machine, "args": {k: str(v) for k, v in vars(args).items()}}
        report["results"] = {o: [asdict(r) for r in runs] for o, runs in results.items()}
        args.json.write_text(json.dumps(report, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
