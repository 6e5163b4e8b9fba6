"""Train the three shipped MNIST models (CS180 part B) with the project's training loop, on the CPU.

    .venv/bin/python scripts/train_shipped.py mnist-flow|mnist-ddpm|mnist-denoiser [--epochs N] [--hidden D] [--out DIR]
    .venv/bin/python scripts/train_shipped.py mnist-flow-2step [--pairs N] [--teacher-steps S] [--epochs N] [--lr R]

Trains on 4,500 digits of mnist-5k, 450 of each class (the last 50 of each class are the quality benchmark's
held-out set) and saves the
EMA weights with `save_pretrained` into models/checkpoints/<name>/ (config.json + safetensors), beside training.json:
the command line, every hyperparameter, the loss of each epoch and step, seconds per epoch, versions, date and the
number of parameters. A resumable state is written to var/train/<name>/state.pt after every epoch (with --out, to
a folder named after that path, so trainings side by side keep theirs apart); `--resume` goes on from it.

mnist-flow-2step is distilled, not trained on digits: reflow (models/distill.py) from the shipped mnist-flow, the
student starting from its weights, on --pairs pairs of noise and the teacher's Euler solution at --teacher-steps
with CFG 5 (a tenth of them unguided), the same loop a `train` job with `distill` runs. The pairs are kept in
var/train/<name>/pairs.pt, so a resumed run does not draw them again.

OMP_WAIT_POLICY=PASSIVE (set before torch loads, unless already set): on a machine whose cores are shared, OpenMP
threads that spin while they wait for a busy core make a step 1.5x slower; idle, it costs nothing.
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # before anything imports torch

import argparse
import json
import shlex
import sys
import time
from dataclasses import asdict, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import diffusers
import torch
from tqdm import tqdm

from models.datasets import held_out_split, mnist_5k
from models.distill import pair_labels, pair_noise, reflow_pairs
from models.inference import CPU_CHUNK, chunked, for_inference
from models.predictors import unet_predictor
from models.train_config import LOSS_WEIGHTS, TrainConfig, TrainState, build_model
from models.training import TrainResult, train
from models.unet import load_network, set_memory_format

ROOT = Path(__file__).resolve().parent.parent
HELD_OUT_PER_CLASS = 50  # the last 50 digits of each class are held out (bench/classifier.py); 4,500 train

# Sized for two CPU cores: D = 32 and batch 128 take about 0.5 s a step (channels-last beats the default layout by
# ~15 %; bfloat16 autocast is ~10x slower on a CPU without native bf16). 60 epochs of 36 steps = 2,160 steps: ~18 min.
PRESETS: dict[str, TrainConfig] = {
    # Flow matching, time + class conditioned (flow spec 2.4): the spec's Adam 1e-2, decayed 10x over the run.
    "mnist-flow": TrainConfig(
        objective="flow", epochs=60, batch_size=128, hidden=32, num_classes=10, p_uncond=0.1, channels_last=True
    ),
    # DDPM, time + class conditioned (DDPM spec 2.4): T = 300 linear betas, the spec's Adam 1e-3.
    "mnist-ddpm": TrainConfig(
        objective="ddpm", epochs=60, batch_size=128, hidden=32, num_classes=10, p_uncond=0.1, channels_last=True
    ),
    # The single-step denoiser (spec 1.2.1): sigma 0.5, 5 epochs of batch 256, Adam 1e-4.
    "mnist-denoiser": TrainConfig(
        objective="denoiser", epochs=5, batch_size=256, hidden=32, num_classes=0, lr=1e-4, channels_last=True
    ),
    # Reflow from mnist-flow (its network, D = 32): fine-tuned from the teacher's weights at a tenth of its rate.
    # p_uncond 0: the unguided pairs carry label -1 and are the only ones trained without a class.
    "mnist-flow-2step": TrainConfig(
        objective="flow",
        epochs=40,
        batch_size=128,
        hidden=32,
        num_classes=10,
        p_uncond=0.0,
        lr=1e-3,
        channels_last=True,
        distill="reflow",
    ),
}
DISTILLED = {"mnist-flow-2step": {"teacher": "mnist-flow", "steps": 2}}  # the distilled presets: teacher, steps
PAIRS, TEACHER_STEPS, TEACHER_GUIDANCE, PAIRS_UNCOND = 3000, 50, 5.0, 0.1  # reflow's defaults here


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("name", choices=sorted(PRESETS))
    p.add_argument("--epochs", type=int, help="passes over the 4,500 training digits")
    p.add_argument("--hidden", type=int, help="D, the UNet's hidden channels")
    p.add_argument("--batch-size", type=int)
    p.add_argument("--lr", type=float, help="Adam's initial rate (default: the spec's for the objective)")
    p.add_argument("--ema-decay", type=float)
    p.add_argument("--seed", type=int)
    p.add_argument(
        "--schedule", choices=("linear", "cosine"), help="ddpm: the beta schedule (default: the spec's linear)"
    )
    p.add_argument("--loss-weight", choices=LOSS_WEIGHTS, help="ddpm: each timestep's weight (default: uniform)")
    p.add_argument("--bf16", action="store_true", help="bfloat16 autocast")
    p.add_argument("--channels-last", action="store_true")
    p.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    p.add_argument("--out", type=Path, help="default: models/checkpoints/NAME")
    p.add_argument("--resume", action="store_true", help="go on from var/train/NAME/state.pt (per --out)")
    p.add_argument("--pairs", type=int, default=PAIRS, help="distilled: reflow's pairs")
    p.add_argument("--teacher-steps", type=int, default=TEACHER_STEPS, help="distilled: the teacher's Euler steps")
    p.add_argument("--guidance", type=float, default=TEACHER_GUIDANCE, help="distilled: the teacher's CFG scale")
    return p.parse_args(argv)


def config_from(args: argparse.Namespace) -> TrainConfig:
    overrides = {
        field: getattr(args, field)
        for field in ("epochs", "hidden", "batch_size", "lr", "ema_decay", "seed", "schedule", "loss_weight")
        if getattr(args, field) is not None
    }
    config = replace(PRESETS[args.name], **overrides)
    return replace(config, bf16=args.bf16 or config.bf16, channels_last=args.channels_last or config.channels_last)


def model_time_note(config: TrainConfig) -> str:
    if config.objective == "ddpm":
        return f"t / T for schedule index t in 0 .. {config.num_timesteps - 1} (T = {config.num_timesteps})"
    return "t in [0, 1], 0 = noise, 1 = data" if config.objective == "flow" else "none"


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    config = config_from(args)
    out: Path = args.out or ROOT / "models" / "checkpoints" / args.name
    run_name = args.name if args.out is None else str(args.out.resolve()).strip("/").replace("/", "_")
    state_path = ROOT / "var" / "train" / run_name / "state.pt"
    state_path.parent.mkdir(parents=True, exist_ok=True)

    pairs: tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None = None
    if args.name in DISTILLED:
        images, labels, _ = pairs = reflow_data(args, state_path.with_name("pairs.pt"))
        dataset: dict[str, Any] = {
            "teacher": DISTILLED[args.name]["teacher"],
            "pairs": len(images),
            "teacher_steps": args.teacher_steps,
            "guidance_scale": args.guidance,
            "unguided_pairs": int((labels < 0).sum()),
        }
        model = build_model(config)
        model.load_state_dict(load_network(ROOT / "models" / "checkpoints" / dataset["teacher"]).state_dict())
    else:
        data = mnist_5k()
        train_idx, held_idx = held_out_split(data.labels, HELD_OUT_PER_CLASS)
        images = torch.from_numpy(data.images[train_idx]).float().div(255).unsqueeze(1)  # (4500, 1, 28, 28) in [0, 1]
        labels = torch.from_numpy(data.labels[train_idx]).long()  # (4500,)
        dataset = {
            "name": "mnist-5k",
            "train": f"{len(train_idx)} digits: all but the last {HELD_OUT_PER_CLASS} of each class",
            "held_out": f"{len(held_idx)} digits: the last {HELD_OUT_PER_CLASS} of each class",
        }
        model = build_model(config)
    train_size = len(images)
    state: TrainState | None = None
    if args.resume and state_path.exists():
        state = torch.load(state_path, weights_only=True)
        if state["config"] != asdict(config):
            sys.exit(f"{state_path} was written with another config: {state['config']}")

    steps_per_epoch = -(-train_size // config.batch_size)
    done = state["step"] if state is not None else 0
    bar = tqdm(total=config.epochs * steps_per_epoch, initial=done, unit="step", desc=args.name, dynamic_ncols=True)
    last = [time.perf_counter()]

    def on_batch(epoch: int, step: int, steps: int, loss: float) -> None:
        now = time.perf_counter()
        rate = min(config.batch_size, train_size - step * config.batch_size) / max(now - last[0], 1e-9)
        last[0] = now
        bar.set_postfix(epoch=f"{epoch + 1}/{config.epochs}", loss=f"{loss:.4f}", img_s=f"{rate:.0f}", refresh=False)
        bar.update(1)

    def on_epoch(epoch: int, st: TrainState) -> None:
        tmp = state_path.with_suffix(".tmp")
        torch.save(st, tmp)
        tmp.replace(state_path)  # atomic: a kill never leaves half a state
        bar.write(f"epoch {epoch + 1}: loss {st['epoch_losses'][-1]:.5f}, {st['epoch_seconds'][-1]:.1f} s")

    result = train(
        model, images, labels, config, on_batch, on_epoch, state, pair_noise=pairs[2] if pairs is not None else None
    )
    bar.close()
    write_checkpoint(args, config, out, result, dataset)


def reflow_data(args: argparse.Namespace, path: Path) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(x1, labels, z) of reflow's pairs: read from `path` when a run with the same settings drew them, else drawn
    from the teacher (about 2 ms a pair and step with CFG on two cores) and kept there."""
    key = [DISTILLED[args.name]["teacher"], args.pairs, args.teacher_steps, args.guidance, args.seed or 0]
    z = pair_noise(args.pairs, (1, 28, 28), args.seed or 0)
    labels = pair_labels(args.pairs, 10, PAIRS_UNCOND)
    if path.exists():
        saved = torch.load(path, weights_only=True)
        if saved["key"] == key:
            return saved["images"].float(), labels, z
    teacher = load_network(ROOT / "models" / "checkpoints" / str(key[0]))
    predict = chunked(unet_predictor(for_inference(teacher, torch.device("cpu"))), CPU_CHUNK)
    bar = tqdm(unit="step", desc="pairs", dynamic_ncols=True)

    def progress(done: int, total: int) -> None:
        bar.total = total
        bar.n = done
        bar.refresh()

    made = reflow_pairs(predict, z, labels, args.teacher_steps, args.guidance, 250, progress)
    bar.close()
    torch.save({"key": key, "images": made.images}, path)
    return made.images, labels, z


def write_checkpoint(
    args: argparse.Namespace, config: TrainConfig, out: Path, result: TrainResult, dataset: dict[str, Any]
) -> None:
    """The EMA weights with save_pretrained, and training.json beside them."""
    ema = result.ema
    set_memory_format(ema, torch.contiguous_format)  # safetensors wants contiguous tensors
    ema.save_pretrained(out)
    record = {
        "model": args.name,
        "command": shlex.join(sys.orig_argv),
        "dataset" if args.name not in DISTILLED else "distilled_from": dataset,
        "value_range": [0.0, 1.0],
        "model_time": model_time_note(config),
        "weights": f"EMA (decay {config.ema_decay})",
        "config": asdict(config),
        "lr": config.learning_rate,
        "unet": {k: v for k, v in ema.config.items() if not k.startswith("_")},
        "num_parameters": sum(p.numel() for p in ema.parameters()),
        "steps": len(result.step_losses),
        "threads": torch.get_num_threads(),
        "epoch_losses": result.epoch_losses,
        "epoch_seconds": [round(s, 2) for s in result.epoch_seconds],
        "seconds_total": round(sum(result.epoch_seconds), 1),
        "step_losses": [round(v, 5) for v in result.step_losses],
        "torch": torch.__version__,
        "diffusers": diffusers.__version__,
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
    }
    (out / "training.json").write_text(json.dumps(record, indent=1) + "\n")
    print(f"saved {out} ({record['num_parameters']:,} parameters, {record['seconds_total']} s)")


if __name__ == "__main__":
    main()
