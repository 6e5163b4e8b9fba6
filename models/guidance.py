"""Guidance rules: how the branches of one step combine into one estimate, each branch in ONE batched pass.

A predictor is `predict(x (N, C, H, W), t (N,), cond (k N, ...)) -> estimate (k N, C, H, W)`: each image under k
conditions, branch-major (row j N + i is image i under condition j). A condition is a tensor with one row per sample
(class labels with -1 for unconditional, or text embeddings), so the branches of a step concatenate, and an image
that several branches share is passed once: the in-house UNet then runs its encoder once for all of them.
Every rule is a callable `rule(predict, x, t) -> estimate`, a wrapper around the model in k-diffusion's manner.

An estimate may carry channels past the image's own: DeepFloyd IF's UNet returns its noise estimate and a learned
variance (3 + 3 channels). The rules combine the image's channels; the rest comes from the conditional branch under
CFG (as diffusers' IF pipelines take it), is brought back per view without the view's change of sign for an anagram,
and is averaged for a hybrid.
"""

from collections.abc import Callable
from dataclasses import dataclass, replace

import torch

from models.factorize import Decomposition
from models.filters import gaussian_blur, highpass
from models.views import View

Predict = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]
Guide = Callable[[Predict, torch.Tensor, torch.Tensor], torch.Tensor]


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
class Anagram:
    """Visual anagram (CS180 A 1.8): the mean of CFG(x, p1) and view^-1(CFG(view(x), p2)), in one pass: 2B images,
    each under its prompt and the unconditional."""

    cond: torch.Tensor  # (B, ...) the upright reading
    cond_viewed: torch.Tensor  # (B, ...) the reading under the view
    uncond: torch.Tensor  # (B, ...)
    view: View
    scale: float = 5.0

    def __call__(self, predict: Predict, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        xv = self.view.view(x)
        both, tt = torch.cat([x, xv]), torch.cat([t, t])
        if self.scale == 1.0:  # no guidance: no unconditional branch
            e1, e2 = predict(both, tt, torch.cat([self.cond, self.cond_viewed])).chunk(2)
        else:
            c1, c2, u1, u2 = predict(
                both, tt, torch.cat([self.cond, self.cond_viewed, self.uncond, self.uncond])
            ).chunk(4)
            ch = x.shape[1]
            e1, e2 = cfg_combine(c1, u1, self.scale, ch), cfg_combine(c2, u2, self.scale, ch)
        (i1, v1), (i2, v2) = _split(e1, x), _split(e2, x)
        extra = None if v1 is None or v2 is None else (v1 + self.view.inverse_map(v2)) / 2
        return _join((i1 + self.view.inverse(i2)) / 2, extra)


@dataclass(frozen=True)
class Hybrid:
    """Hybrid image (CS180 A 1.9): lowpass(CFG(p_low)) + highpass(CFG(p_high)), in one pass: x under 3 conditions."""

    cond_low: torch.Tensor  # (B, ...) seen from afar
    cond_high: torch.Tensor  # (B, ...) seen up close
    uncond: torch.Tensor  # (B, ...)
    kernel_size: int = 33
    sigma: float = 2.0
    scale: float = 5.0

    def __call__(self, predict: Predict, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        if self.scale == 1.0:  # no guidance: no unconditional branch
            e_low, e_high = predict(x, t, torch.cat([self.cond_low, self.cond_high])).chunk(2)
        else:
            low, high, u = predict(x, t, torch.cat([self.cond_low, self.cond_high, self.uncond])).chunk(3)
            ch = x.shape[1]
            e_low, e_high = cfg_combine(low, u, self.scale, ch), cfg_combine(high, u, self.scale, ch)
        (i_low, v_low), (i_high, v_high) = _split(e_low, x), _split(e_high, x)
        blended = gaussian_blur(i_low, self.kernel_size, self.sigma) + highpass(i_high, self.kernel_size, self.sigma)
        return _join(blended, None if v_low is None or v_high is None else (v_low + v_high) / 2)


@dataclass(frozen=True)
class Factorized:
    """Factorized diffusion (Geng et al. 2024): component k of CFG(prompt k), summed over the decomposition's
    components, in one pass: x under k + 1 conditions. A 2-band `Frequency` is `Hybrid`'s rule."""

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


Rule = CFG | Anagram | Hybrid | Factorized


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
