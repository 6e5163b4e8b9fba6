"""The digit judge: a small LeNet trained on real MNIST digits, which reads generated digits and measures how far
their distribution is from real ones (bench/quality.py, and the `quality` of a train job's metrics.json).

- class accuracy: the fraction of samples the judge reads as the class they were asked for;
- Frechet distance: the FID formula on the judge's penultimate features, samples against held-out real digits;
  its floor is the same distance from real training digits, as many as there are samples (the distance is biased
  upward for small sets, so a floor from the same n is the fair yardstick).

The shipped judge (models/checkpoints/judge-mnist) is trained by bench/classifier.py on the 4,500 training digits of
mnist-5k (`held_out_split`: the last 50 of each class are held out); its training.json has the command.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from safetensors.torch import load_file
from torch import Tensor, nn

from models.datasets import held_out_split, mnist_5k

JUDGE_DIR = Path(__file__).resolve().parent / "checkpoints" / "judge-mnist"
WEIGHTS = "model.safetensors"
HELD_OUT_PER_CLASS = 50  # the last 50 digits of each class of mnist-5k are held out; the other 450 per class train
MNIST_MEAN, MNIST_STD = 0.1307, 0.3081


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


def split() -> tuple[np.ndarray, np.ndarray]:
    """(train, held_out) indices into mnist-5k: per class, the last HELD_OUT_PER_CLASS digits are held out."""
    return held_out_split(mnist_5k().labels, HELD_OUT_PER_CLASS)


def digits(indices: np.ndarray) -> tuple[Tensor, Tensor]:
    """mnist-5k digits as (N, 1, 28, 28) float in [0, 1], and their (N,) labels."""
    data = mnist_5k()
    images = torch.from_numpy(data.images[indices]).float().div(255).unsqueeze(1)
    return images, torch.from_numpy(data.labels[indices]).long()


@torch.inference_mode()
def logits(net: LeNet, images: Tensor, batch: int = 500) -> Tensor:
    return torch.cat([net(images[i : i + batch]) for i in range(0, len(images), batch)])


@torch.inference_mode()
def features(net: LeNet, images: Tensor, batch: int = 500) -> np.ndarray:
    """(N, features) float64 penultimate activations of (N, 1, 28, 28) images in [0, 1]."""
    return torch.cat([net.features(images[i : i + batch]) for i in range(0, len(images), batch)]).double().numpy()


def frechet_distance(a: np.ndarray, b: np.ndarray) -> float:
    """The Frechet distance between Gaussians fitted to two (N, F) feature sets (the FID formula):
    |mu_a - mu_b|^2 + Tr(S_a + S_b - 2 (S_a S_b)^(1/2)).

    Tr (S_a S_b)^(1/2) is the sum of the square roots of the eigenvalues of S_a^(1/2) S_b S_a^(1/2), a symmetric
    positive semi-definite matrix: two symmetric eigendecompositions, exact where a general matrix square root of the
    (non-symmetric) product leaves imaginary rounding or fails on a singular covariance.
    """
    mu_a, mu_b = a.mean(0), b.mean(0)
    s_a, s_b = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    w, v = np.linalg.eigh(s_a)
    root_a = (v * np.sqrt(w.clip(min=0))) @ v.T  # S_a^(1/2)
    trace_covmean = np.sqrt(np.linalg.eigvalsh(root_a @ s_b @ root_a).clip(min=0)).sum()
    return float(((mu_a - mu_b) ** 2).sum() + np.trace(s_a) + np.trace(s_b) - 2 * trace_covmean)


def load_judge(folder: Path = JUDGE_DIR) -> LeNet:
    """The judge saved by bench/classifier.py --export: config.json (features, dropout) and model.safetensors."""
    config = json.loads((folder / "config.json").read_text())
    net = LeNet(config["features"], config["dropout"])
    net.load_state_dict(load_file(folder / WEIGHTS))
    return net.eval()


@dataclass(frozen=True)
class DigitQuality:
    n: int
    class_accuracy: float | None  # None for samples without an asked-for class
    fd: float  # to the held-out digits
    fd_floor_same_n: float  # n training digits to the held-out digits

    def as_dict(self) -> dict[str, float | int | None]:
        acc = None if self.class_accuracy is None else round(self.class_accuracy, 4)
        return {
            "n": self.n,
            "class_accuracy": acc,
            "fd": round(self.fd, 2),
            "fd_floor_same_n": round(self.fd_floor_same_n, 2),
            "fd_over_floor_same_n": round(self.fd / self.fd_floor_same_n, 3),
        }


@cache
def _shipped() -> tuple[LeNet, np.ndarray, np.ndarray]:
    """The shipped judge, and its features of the held-out and of the training digits of mnist-5k."""
    net = load_judge()
    train, held = split()
    return net, features(net, digits(held)[0]), features(net, digits(train)[0])


def judge_digits(samples: Tensor, classes: Tensor | None, seed: int = 0) -> DigitQuality:
    """samples (N, 1, 28, 28) in [0, 1], read by the shipped judge; classes (N,) what was asked, or None."""
    net, held, train = _shipped()
    samples = samples.detach().float().cpu()
    n = len(samples)
    accuracy = None if classes is None else float((logits(net, samples).argmax(1) == classes.cpu()).float().mean())
    pick = np.random.default_rng(seed).choice(len(train), min(n, len(train)), replace=False)
    fd = frechet_distance(features(net, samples), held)
    return DigitQuality(n, accuracy, fd, frechet_distance(train[pick], held))
