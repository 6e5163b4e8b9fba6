"""`diffusion-jobs train`: the training run of a `train` job (worker/trainer.py, the same code), without Redis or
the API: a progress bar, and the checkpoint folder plus every artifact written to `--out`.

    diffusion-jobs train --dataset fashion-mnist --objective flow --conditioning class --epochs 10 --out var/fm-flow

`--out` then holds config.json and diffusion_pytorch_model.safetensors (load with `models.unet.load_network`),
noising.png, loss.png, epoch_{k}.png, frames.gif or the denoiser's figures, metrics.json, training.json (the
validated parameters and the result), and state.pt after every epoch: `--resume` goes on from it.
"""

import argparse
import json
import os
import re
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import ValidationError

from core.settings import get_settings

if TYPE_CHECKING:  # torch loads only once a run starts
    from worker.trainer import TrainingProgress

FIELDS: list[tuple[str, type, str]] = [
    ("conditioning", str, "none (denoiser), time or class (default for ddpm and flow)"),
    ("epochs", int, "default: the spec's for the objective"),
    ("batch_size", int, ""),
    ("lr", float, "Adam's initial rate"),
    ("hidden", int, "D, the UNet's width"),
    ("sigma", float, "denoiser: the noise level (0.5)"),
    ("p_uncond", float, "class: label drop rate (0.1)"),
    ("ema_decay", float, ""),
    ("grad_clip", float, "0: none"),
    ("sample_steps", int, "steps of the epoch figures' sampling (default: DDPM all T, flow 50)"),
    ("image_size", int, "folder datasets"),
    ("arch", str, "cs180 or unet2d"),
    ("schedule", str, "ddpm: linear or cosine"),
    ("loss", str, "l2 or l1"),
    ("precision", str, "auto (bf16 where the device has it natively), fp32 or bf16"),
    ("limit", int, "train on this many items, evenly spaced"),
]


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--dataset", required=True, help="mnist-5k, mnist, fashion-mnist or folder:<name> (DATA_DIR)")
    p.add_argument("--objective", required=True, choices=["denoiser", "ddpm", "flow"])
    for name, kind, help_text in FIELDS:
        p.add_argument(f"--{name.replace('_', '-')}", dest=name, type=kind, help=help_text or None)
    p.add_argument("--sample-epochs", type=int, nargs="*", help="when to draw epoch_{k}.png")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--name", help="the model's name (default: the --out folder's)")
    p.add_argument("--out", type=Path, required=True, help="the folder for the checkpoint and artifacts")
    p.add_argument("--resume", action="store_true", help="go on from --out/state.pt")
    p.add_argument("--threads", type=int, help="torch CPU threads (default: torch's)")


def request(args: argparse.Namespace) -> dict[str, Any]:
    body: dict[str, Any] = {
        "kind": "train",
        "dataset": args.dataset,
        "objective": args.objective,
        "seed": args.seed,
        "name": args.name or re.sub(r"[^a-z0-9-]+", "-", args.out.resolve().name.lower()).strip("-")[:41] or "model",
    }
    for name, _, _ in FIELDS:
        if getattr(args, name) is not None:
            body[name] = getattr(args, name)
    if args.sample_epochs is not None:
        body["sample_epochs"] = args.sample_epochs
    return body


class FolderSink:
    """Artifacts as files of `out`, the state as out/state.pt (replaced atomically), progress as a tqdm bar."""

    def __init__(self, out: Path, resume: bool) -> None:
        from tqdm import tqdm

        self.out, self.resume = out, resume
        self.bar = tqdm(unit="step", dynamic_ncols=True)

    def _write(self, name: str, data: bytes) -> None:
        tmp = self.out / f".{name}.{os.getpid()}.tmp"
        tmp.write_bytes(data)
        tmp.replace(self.out / name)

    def artifact(self, name: str, data: bytes, media_type: str) -> None:
        self._write(name, data)

    def load_state(self) -> bytes | None:
        path = self.out / "state.pt"
        return path.read_bytes() if self.resume and path.exists() else None

    def save_state(self, data: bytes) -> None:
        self._write("state.pt", data)

    def training(self, p: "TrainingProgress") -> None:
        if self.bar.total != p.total:
            self.bar.reset(total=p.total)
            self.bar.update(p.step - 1)
        self.bar.set_postfix(
            epoch=f"{p.epoch}/{p.epochs}", loss=f"{p.loss:.4f}", img_s=f"{p.images_per_second:.0f}", refresh=False
        )
        self.bar.update(1)

    def sampling(self, epoch: int, step: int, total: int) -> None:
        if step == total:
            self.bar.write(f"epoch {epoch}: samples drawn ({total} steps)")

    def pairs(self, step: int, total: int) -> None:
        if step == total:
            self.bar.write(f"pairs drawn ({total} teacher steps)")

    def load_pairs(self) -> bytes | None:
        path = self.out / "pairs.pt"
        return path.read_bytes() if self.resume and path.exists() else None

    def save_pairs(self, data: bytes) -> None:
        self._write("pairs.pt", data)


def run(args: argparse.Namespace) -> int:
    import torch

    from core.kinds.base import Admitted
    from core.kinds.train import TrainJob
    from models.datasets import DatasetError
    from models.training import TrainingDiverged
    from worker.train_data import load_data
    from worker.trainer import run_training

    if args.threads:
        torch.set_num_threads(args.threads)
    try:
        req = TrainJob.model_validate(request(args))
    except ValidationError as exc:
        for e in exc.errors():
            sys.stderr.write(f"{'.'.join(str(p) for p in e['loc']) or 'request'}: {e['msg']}\n")
        return 2
    try:
        data = load_data(req, get_settings().data_dir)
    except DatasetError as exc:
        sys.stderr.write(f"{exc}\n")
        return 2
    args.out.mkdir(parents=True, exist_ok=True)
    sink = FolderSink(args.out, args.resume)
    try:
        trained = run_training(Admitted(req, args.seed), data, sink)
    except TrainingDiverged as exc:
        sink.bar.close()
        sys.stderr.write(f"{exc}\n")
        return 1
    sink.bar.close()
    for name, blob in trained.checkpoint.items():
        sink.artifact(name, blob, "")
    record = {"params": req.model_dump(mode="json", exclude_none=True), "result": trained.summary}
    (args.out / "training.json").write_text(json.dumps(record, indent=1) + "\n")
    sys.stdout.write(f"saved {args.out} ({trained.summary['num_parameters']:,} parameters)\n")
    return 0
