"""Guidance rules: how the branches of one step combine into one estimate, each branch in ONE batched pass.

A predictor is `predict(x (N, C, H, W), t (N,), cond (k N, ...)) -> estimate (k N, C, H, W)`: each image under k
conditions, branch-major (row j N + i is image i under condition j). A condition is a tensor with one row per sample
(class labels with -1 for unconditional, or text embeddings), so the branches of a step concatenate, and an image
that several branches share is passed once: the in-house UNet then runs its encoder once for all of them.
Every rule is a callable `rule(predict, x, t) -> estimate`, a wrapper around the model in k-diffusion's manner.

An estimate may carry channels past the image's own: DeepFloyd IF's UNet returns its noise estimate and a learned
variance (3 + 3 channels). The rules combine the image's channels; the rest comes from the conditional branch under
CFG (as diffusers' IF pipelines take it), is brought back per view without the view's change of sign for an anagram,
and is averaged over the views or components.
"""

from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Literal

import torch

from models.factorize import Decomposition
from models.views import View

Predict = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]
Guide = Callable[[Predict, torch.Tensor, torch.Tensor], torch.Tensor]
Reduction = Literal["mean", "sum", "alternate"]


def cfg_combine(cond: torch.Tensor, uncond: torch.Tensor, scale: float, channels: int) -> torch.Tensor:
    """u + gamma (c - u) over the image's `channels`; the channels past them (a learned variance) are c's."""
    c, u = cond[:, :channels], uncond[:, :channels]
    guided = u + scale * (c - u)
    return guided if cond.shape[1] == channels else torch.cat([guided, cond[:, channels:]], dim=1)


@dataclass(frozen=True)
class CFG:
    """Classifier-free guidance (CS180 A 1.6, B 2.5), x under both conditions in one pass. Scale 1, or no
    unconditional branch: the plain estimate."""

    cond: torch.Tensor  # (B, ...)
    uncond: torch.Tensor | None  # (B, ...); None: no guidance, one branch
    scale: float = 5.0

    def __call__(self, predict: Predict, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        if self.uncond is None or self.scale == 1.0:
            return predict(x, t, self.cond)
        c, u = predict(x, t, torch.cat([self.cond, self.uncond])).chunk(2)
        return cfg_combine(c, u, self.scale, x.shape[1])


@dataclass(frozen=True)
class MultiView:
    """Visual anagrams (CS180 A 1.8; Geng et al., "Visual Anagrams", 2024): for each of 2-4 views,
    view^-1(CFG(view(x), prompt)), combined by `reduction`, in one pass: K viewed copies of x, each under its prompt
    and the unconditional. "mean" averages the views' estimates, "sum" adds them, "alternate" takes view i mod K at
    the i-th of `model_times` (the run's times as the network sees them; every view is still evaluated, so a
    conditioning image beside x, as stage II's, lines up with the viewed copies)."""

    conds: tuple[torch.Tensor, ...]  # each (B, ...), one per view
    uncond: torch.Tensor  # (B, ...)
    views: tuple[View, ...]
    reduction: Reduction = "mean"
    scale: float = 5.0
    model_times: tuple[float, ...] = ()

    def __call__(self, predict: Predict, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        k, ch = len(self.views), x.shape[1]
        viewed, tt = torch.cat([v.view(x) for v in self.views]), t.repeat(k)
        if self.scale == 1.0:  # no guidance: no unconditional branch
            estimates = list(predict(viewed, tt, torch.cat(self.conds)).chunk(k))
        else:
            rows = predict(viewed, tt, torch.cat([*self.conds, *[self.uncond] * k])).chunk(2 * k)
            estimates = [cfg_combine(c, u, self.scale, ch) for c, u in zip(rows[:k], rows[k:], strict=True)]
        parts = [_split(e, x) for e in estimates]
        images = [v.inverse(i) for v, (i, _) in zip(self.views, parts, strict=True)]
        extras = [v.inverse_map(e) for v, (_, e) in zip(self.views, parts, strict=True) if e is not None]
        if self.reduction == "alternate":
            j = self._turn(float(t[0]))
            return _join(images[j], extras[j] if extras else None)
        image = sum(images[1:], images[0])
        extra = sum(extras[1:], extras[0]) / k if extras else None
        return _join(image / k if self.reduction == "mean" else image, extra)

    def _turn(self, t: float) -> int:
        """Which view leads at model time t: the index of the nearest of `model_times`, mod K."""
        if not self.model_times:
            raise ValueError("alternate needs the run's model_times")
        step = min(range(len(self.model_times)), key=lambda i: abs(self.model_times[i] - t))
        return step % len(self.views)


@dataclass(frozen=True)
class Factorized:
    """Factorized diffusion (Geng et al. 2024): component k of CFG(prompt k), summed over the decomposition's
    components, in one pass: x under k + 1 conditions. A 2-band `Frequency` is CS180 A 1.9's hybrid:
    lowpass(CFG(p_low)) + highpass(CFG(p_high))."""

    conds: tuple[torch.Tensor, ...]  # each (B, ...), one per component, coarsest first
    uncond: torch.Tensor  # (B, ...)
    decompose: Decomposition
    scale: float = 5.0

    def __call__(self, predict: Predict, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        k, ch = len(self.conds), x.shape[1]
        if self.scale == 1.0:  # no guidance: no unconditional branch
            estimates = list(predict(x, t, torch.cat(self.conds)).chunk(k))
        else:
            *guided, u = predict(x, t, torch.cat([*self.conds, self.uncond])).chunk(k + 1)
            estimates = [cfg_combine(c, u, self.scale, ch) for c in guided]
        parts = [_split(e, x) for e in estimates]
        image = sum((self.decompose(i)[j] for j, (i, _) in enumerate(parts)), torch.zeros_like(x))
        extras = [v for _, v in parts if v is not None]
        return _join(image, torch.stack(extras).mean(0) if len(extras) == k else None)


def _split(est: torch.Tensor, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The estimate's image channels, and the channels past them (None where there are none)."""
    ch = x.shape[1]
    return (est, None) if est.shape[1] == ch else (est[:, :ch], est[:, ch:])


def _join(image_part: torch.Tensor, extra_part: torch.Tensor | None) -> torch.Tensor:
    return image_part if extra_part is None else torch.cat([image_part, extra_part], dim=1)


Rule = CFG | MultiView | Factorized


@dataclass(frozen=True)
class Interval:
    """`rule` only where the noise level is within [lo, hi], the same rule at scale 1 elsewhere (one branch fewer).

    Guidance at high noise levels is what costs a sample its variety, and it is not needed there to get the class
    right (Kynkaenniemi et al. 2024, "Applying guidance in a limited interval improves sample and distribution
    quality in diffusion models"; bench/quality.py measures it on the MNIST models). `sigma` maps the time the
    network is given to the process's noise level (NoiseProcess.sigma).
    """

    rule: Rule
    sigma: Callable[[float], float]
    lo: float
    hi: float

    def __call__(self, predict: Predict, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        inside = self.lo <= self.sigma(float(t[0])) <= self.hi
        return (self.rule if inside else replace(self.rule, scale=1.0))(predict, x, t)
