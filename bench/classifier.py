"""Trains the digit judge of models/judge.py (a LeNet): the quality benchmark's class reader and feature extractor.

    .venv/bin/python bench/classifier.py --export models/checkpoints/judge-mnist   # the shipped judge

The split: mnist-5k is sorted by label (digits 0 .. 4499 are the classes 0 to 8, 4500 .. 4999 are all nines), so
"the first 4,500" would hold out one whole class. Here the last 50 digits of each class are held out (500 in all)
and the other 450 of each class (4,500) train. The classifier trains on those 4,500 with a fixed seed. Its weights
are cached in var/bench/classifier.pt with a key, a hash of the code that defines and trains it and of the
hyperparameters, so a rerun loads them and a change to that code trains afresh.
"""

from __future__ import annotations

import os
import sys

# Run as a script, this file's folder comes first on sys.path, where bench/queue.py would shadow the standard
# library's `queue`; put the repository root there instead (bench/ is then a namespace package).
if sys.path and os.path.abspath(sys.path[0] or ".") == os.path.dirname(os.path.abspath(__file__)):
    sys.path[0] = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

import argparse
import hashlib
import inspect
import json
import math
import shlex
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors.torch import save_file
from torch import Tensor
from tqdm import tqdm

from models.judge import JUDGE_DIR, WEIGHTS, LeNet, digits, logits, split

ROOT = Path(__file__).resolve().parent.parent
CACHE = ROOT / "var" / "bench" / "classifier.pt"


@dataclass(frozen=True)
class ClassifierConfig:
    epochs: int = 12
    batch_size: int = 64
    lr: float = 1e-3
    lr_final_ratio: float = 0.1  # ExponentialLR: the rate ends 10x lower
    max_shift: float = 2.0  # augmentation: each image moved by up to this many pixels,
    max_rotation_deg: float = 12.0  # turned by up to this many degrees
    max_scale: float = 0.1  # and scaled by up to 10 %
    dropout: float = 0.3
    features: int = 128  # the penultimate layer: the FD's feature space
    seed: int = 0


@dataclass(frozen=True)
class Judge:
    net: LeNet  # in eval mode
    held_out_accuracy: float
    key: str
    trained_now: bool


def cache_key(config: ClassifierConfig) -> str:
    code = "".join(inspect.getsource(obj) for obj in (LeNet, split, digits, augment, train_classifier))
    payload = code.encode() + json.dumps(asdict(config), sort_keys=True).encode()
    return hashlib.sha256(payload).hexdigest()[:16]


def augment(x: Tensor, gen: torch.Generator, config: ClassifierConfig) -> Tensor:
    """Each image turned, scaled and moved by its own random affine map (bilinear, zero outside)."""
    n = x.shape[0]
    u = torch.rand(n, 4, generator=gen) * 2 - 1  # (n, 4) in [-1, 1]
    angle = u[:, 0] * math.radians(config.max_rotation_deg)
    scale = 1 + u[:, 1] * config.max_scale
    shift = u[:, 2:] * (2 * config.max_shift / x.shape[-1])  # pixels -> affine_grid's [-1, 1] units
    cos, sin = torch.cos(angle) / scale, torch.sin(angle) / scale
    theta = torch.stack([torch.stack([cos, -sin, shift[:, 0]], 1), torch.stack([sin, cos, shift[:, 1]], 1)], 1)
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)  # (n, H, W, 2)
    return F.grid_sample(x, grid, align_corners=False)


def train_classifier(config: ClassifierConfig) -> LeNet:
    images, labels = digits(split()[0])
    n = len(labels)
    with torch.random.fork_rng():  # init and dropout draw from the global RNG: seed it, leave the caller's alone
        torch.manual_seed(config.seed)
        net = LeNet(config.features, config.dropout)
        gen = torch.Generator().manual_seed(config.seed)
        opt = torch.optim.Adam(net.parameters(), lr=config.lr)
        sched = torch.optim.lr_scheduler.ExponentialLR(opt, gamma=config.lr_final_ratio ** (1 / config.epochs))
        steps = -(-n // config.batch_size)
        bar = tqdm(total=config.epochs * steps, desc="classifier", unit="step", file=sys.stderr, dynamic_ncols=True)
        net.train()
        for _ in range(config.epochs):
            order = torch.randperm(n, generator=gen)
            for i in range(steps):
                idx = order[i * config.batch_size : (i + 1) * config.batch_size]
                loss = F.cross_entropy(net(augment(images[idx], gen, config)), labels[idx])
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                bar.update(1)
                bar.set_postfix(loss=f"{loss.item():.3f}", refresh=False)
            sched.step()
        bar.close()
    return net.eval()


def accuracy(net: LeNet, images: Tensor, labels: Tensor) -> float:
    return float((logits(net, images).argmax(1) == labels).float().mean())


def load_judge(config: ClassifierConfig | None = None, cache: Path = CACHE) -> Judge:
    """The cached classifier when its key matches, else one trained now (and cached)."""
    config = config or ClassifierConfig()
    key = cache_key(config)
    net, trained_now = None, False
    if cache.exists():
        saved = torch.load(cache, weights_only=True)
        if saved.get("key") == key:
            net = LeNet(config.features, config.dropout)
            net.load_state_dict(saved["state_dict"])
            net.eval()
    if net is None:
        net, trained_now = train_classifier(config), True
        cache.parent.mkdir(parents=True, exist_ok=True)
        tmp = cache.with_suffix(".tmp")
        torch.save({"key": key, "config": asdict(config), "state_dict": net.state_dict()}, tmp)
        tmp.replace(cache)
    held_images, held_labels = digits(split()[1])
    return Judge(net, accuracy(net, held_images, held_labels), key, trained_now)


def export(judge: Judge, config: ClassifierConfig, folder: Path) -> None:
    """The judge as models/judge.py loads it (config.json, model.safetensors), and training.json: how it was made."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.json").write_text(json.dumps({"features": config.features, "dropout": config.dropout}) + "\n")
    save_file({k: v.contiguous() for k, v in judge.net.state_dict().items()}, folder / WEIGHTS)
    record = {
        "command": shlex.join(sys.orig_argv),
        "arch": "LeNet: conv 5x5 32 - pool - conv 5x5 64 - pool - fc 128 - fc 10",
        "trained_on": "mnist-5k, 450 digits per class (all but the last 50 of each class)",
        "held_out": "mnist-5k, the last 50 digits of each class",
        "held_out_accuracy": judge.held_out_accuracy,
        "config": asdict(config),
        "key": judge.key,
        "torch": torch.__version__,
    }
    (folder / "training.json").write_text(json.dumps(record, indent=1) + "\n")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--export", type=Path, default=JUDGE_DIR, help=f"folder to write the judge to (default {JUDGE_DIR})")
    args = p.parse_args(argv)
    config = ClassifierConfig()
    judge = load_judge(config)
    export(judge, config, args.export)
    print(f"judge {judge.key}: held-out accuracy {100 * judge.held_out_accuracy:.1f} %, written to {args.export}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
