"""A small LeNet-style MNIST classifier: the quality benchmark's judge (class accuracy) and feature extractor (FD).

The split: mnist-5k is sorted by label (digits 0 .. 4499 are the classes 0 to 8, 4500 .. 4999 are all nines), so
"the first 4,500" would hold out one whole class. Here the last 50 digits of each class are held out (500 in all)
and the other 450 of each class (4,500) train. The classifier trains on those 4,500 with a fixed seed. Its weights
are cached in var/bench/classifier.pt with a key, a hash of the code that defines and trains it and of the
hyperparameters, so a rerun loads them and a change to that code trains afresh.
"""

from __future__ import annotations

import hashlib
import inspect
import json
import math
import sys
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from scipy import linalg
from torch import Tensor, nn
from tqdm import tqdm

from models.datasets import held_out_split, mnist_5k

ROOT = Path(__file__).resolve().parent.parent
CACHE = ROOT / "var" / "bench" / "classifier.pt"
HELD_OUT_PER_CLASS = 50  # the last 50 digits of each class are held out; the other 450 per class train
MNIST_MEAN, MNIST_STD = 0.1307, 0.3081


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


class LeNet(nn.Module):
    """conv(5x5, 32) - pool - conv(5x5, 64) - pool - fc(128) - fc(10); inputs (B, 1, 28, 28) in [0, 1]."""

    def __init__(self, features: int = 128, dropout: float = 0.3) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(1, 32, 5, padding=2)  # (B, 32, 28, 28) -> pool (B, 32, 14, 14)
        self.conv2 = nn.Conv2d(32, 64, 5, padding=2)  # (B, 64, 14, 14) -> pool (B, 64, 7, 7)
        self.fc1 = nn.Linear(64 * 7 * 7, features)
        self.drop = nn.Dropout(dropout)
        self.fc2 = nn.Linear(features, 10)

    def features(self, x: Tensor) -> Tensor:
        """(B, features): the penultimate layer, before its ReLU (after it, dead units make the covariance singular)."""
        x = (x - MNIST_MEAN) / MNIST_STD
        x = F.max_pool2d(F.relu(self.conv1(x)), 2)
        x = F.max_pool2d(F.relu(self.conv2(x)), 2)
        out: Tensor = self.fc1(x.flatten(1))
        return out

    def forward(self, x: Tensor) -> Tensor:
        out: Tensor = self.fc2(self.drop(F.relu(self.features(x))))  # (B, 10) logits
        return out


@dataclass(frozen=True)
class Judge:
    net: LeNet  # in eval mode
    held_out_accuracy: float
    key: str
    trained_now: bool


def split() -> tuple[np.ndarray, np.ndarray]:
    """(train, held_out) indices into mnist-5k: per class, the last HELD_OUT_PER_CLASS digits are held out."""
    return held_out_split(mnist_5k().labels, HELD_OUT_PER_CLASS)


def digits(indices: np.ndarray) -> tuple[Tensor, Tensor]:
    """mnist-5k digits as (N, 1, 28, 28) float in [0, 1], and their (N,) labels."""
    data = mnist_5k()
    images = torch.from_numpy(data.images[indices]).float().div(255).unsqueeze(1)
    return images, torch.from_numpy(data.labels[indices]).long()


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


@torch.inference_mode()
def logits(net: LeNet, images: Tensor, batch: int = 500) -> Tensor:
    return torch.cat([net(images[i : i + batch]) for i in range(0, len(images), batch)])


@torch.inference_mode()
def features(net: LeNet, images: Tensor, batch: int = 500) -> np.ndarray:
    """(N, features) float64 penultimate activations of (N, 1, 28, 28) images in [0, 1]."""
    return torch.cat([net.features(images[i : i + batch]) for i in range(0, len(images), batch)]).double().numpy()


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


def frechet_distance(a: np.ndarray, b: np.ndarray) -> float:
    """The Frechet distance between Gaussians fitted to two (N, F) feature sets (the FID formula):
    |mu_a - mu_b|^2 + Tr(S_a + S_b - 2 (S_a S_b)^(1/2))."""
    mu_a, mu_b = a.mean(0), b.mean(0)
    s_a, s_b = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    with warnings.catch_warnings():  # ReLU features can be constant (dead units): a singular product is expected
        warnings.simplefilter("ignore", linalg.LinAlgWarning)
        covmean = linalg.sqrtm(s_a @ s_b)
    if not np.isfinite(covmean).all():  # singular product: nudge the diagonals, as pytorch-fid does
        eps = np.eye(len(s_a)) * 1e-6
        covmean = linalg.sqrtm((s_a + eps) @ (s_b + eps))
    covmean = np.real(covmean)  # sqrtm leaves tiny imaginary parts from rounding
    return float(((mu_a - mu_b) ** 2).sum() + np.trace(s_a) + np.trace(s_b) - 2 * np.trace(covmean))
