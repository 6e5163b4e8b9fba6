"""Guidance rules: how the branches of one step combine into one estimate, each branch in ONE batched pass.

A predictor is `predict(x (N, C, H, W), t (N,), cond (N, ...)) -> estimate (N, C, H, W)`; a condition is a tensor
with one row per sample (class labels with -1 for unconditional, or text embeddings), so branches concatenate.
Every rule is a callable `rule(predict, x, t) -> estimate`, a wrapper around the model in k-diffusion's manner.
"""

from collections.abc import Callable
from dataclasses import dataclass

import torch

from models.filters import gaussian_blur, highpass
from models.views import View

Predict = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]
Guide = Callable[[Predict, torch.Tensor, torch.Tensor], torch.Tensor]


def cfg_combine(cond: torch.Tensor, uncond: torch.Tensor, scale: float) -> torch.Tensor:
    return uncond + scale * (cond - uncond)  # u + gamma (c - u)


@dataclass(frozen=True)
class CFG:
    """Classifier-free guidance (CS180 A 1.6, B 2.5). Scale 1, or no unconditional branch: the plain estimate."""

    cond: torch.Tensor  # (B, ...)
    uncond: torch.Tensor | None  # (B, ...); None: no guidance, one branch
    scale: float = 5.0

    def __call__(self, predict: Predict, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        if self.uncond is None or self.scale == 1.0:
            return predict(x, t, self.cond)
        c, u = predict(torch.cat([x, x]), torch.cat([t, t]), torch.cat([self.cond, self.uncond])).chunk(2)
        return cfg_combine(c, u, self.scale)


@dataclass(frozen=True)
class Anagram:
    """Visual anagram (CS180 A 1.8): the mean of CFG(x, p1) and view^-1(CFG(view(x), p2)), in one pass of 4B."""

    cond: torch.Tensor  # (B, ...) the upright reading
    cond_viewed: torch.Tensor  # (B, ...) the reading under the view
    uncond: torch.Tensor  # (B, ...)
    view: View
    scale: float = 5.0

    def __call__(self, predict: Predict, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        xv = self.view.view(x)
        est = predict(
            torch.cat([x, x, xv, xv]),
            torch.cat([t, t, t, t]),
            torch.cat([self.cond, self.uncond, self.cond_viewed, self.uncond]),
        )
        c1, u1, c2, u2 = est.chunk(4)
        return (cfg_combine(c1, u1, self.scale) + self.view.inverse(cfg_combine(c2, u2, self.scale))) / 2


@dataclass(frozen=True)
class Hybrid:
    """Hybrid image (CS180 A 1.9): lowpass(CFG(p_low)) + highpass(CFG(p_high)), in one pass of 3B."""

    cond_low: torch.Tensor  # (B, ...) seen from afar
    cond_high: torch.Tensor  # (B, ...) seen up close
    uncond: torch.Tensor  # (B, ...)
    kernel_size: int = 33
    sigma: float = 2.0
    scale: float = 5.0

    def __call__(self, predict: Predict, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        est = predict(
            torch.cat([x, x, x]), torch.cat([t, t, t]), torch.cat([self.cond_low, self.cond_high, self.uncond])
        )
        low, high, u = est.chunk(3)
        e_low, e_high = cfg_combine(low, u, self.scale), cfg_combine(high, u, self.scale)
        return gaussian_blur(e_low, self.kernel_size, self.sigma) + highpass(e_high, self.kernel_size, self.sigma)
