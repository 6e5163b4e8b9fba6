"""Decompositions for factorized diffusion (Geng et al., "Factorized Diffusion", ECCV 2024): an image as a sum of
components, each of which a hybrid job generates under its own prompt (models/guidance.py, `Factorized`).

Each decomposition maps x (B, C, H, W) to its components, coarsest first; the last is x minus the others, so they
sum to x exactly (tests/models/test_factorize.py); `scaled(f)` is the same decomposition of an image f times the
side (DeepFloyd IF's stage II). A hybrid of CS180 A 1.9 is `Frequency` with one sigma. `Hold` keeps one component on
a reference image's (the paper's inverse problems).
"""

import functools
import itertools
import math
from dataclasses import dataclass, replace
from typing import Self

import torch
import torch.nn.functional as F

from models.filters import gaussian_blur
from models.forward import randn_like_per_sample
from models.processes import NoiseProcess


def _with_residual(x: torch.Tensor, parts: list[torch.Tensor]) -> list[torch.Tensor]:
    return [*parts, x - sum(parts, torch.zeros_like(x))]


@dataclass(frozen=True)
class Frequency:
    """Frequency bands split by Gaussian blurs of descending `sigmas`: blur(s1), blur(s2) - blur(s1), ..., then the
    rest (the highest frequencies); len(sigmas) + 1 components."""

    kernel_size: int
    sigmas: tuple[float, ...]

    def __call__(self, x: torch.Tensor) -> list[torch.Tensor]:
        blurs = [gaussian_blur(x, self.kernel_size, s) for s in self.sigmas]
        bands = [blurs[0], *(finer - coarser for coarser, finer in itertools.pairwise(blurs))]
        return _with_residual(x, bands)

    def scaled(self, factor: int) -> Self:
        """The same bands on an image `factor` times the side: sigmas times factor, the kernel odd around them."""
        return replace(self, kernel_size=(self.kernel_size * factor) | 1, sigmas=tuple(s * factor for s in self.sigmas))


@dataclass(frozen=True)
class Color:
    """Grayscale (each pixel's mean over the channels, in every channel) and the colour around it."""

    def __call__(self, x: torch.Tensor) -> list[torch.Tensor]:
        return _with_residual(x, [x.mean(dim=1, keepdim=True).expand_as(x)])

    def scaled(self, factor: int) -> Self:
        return self  # per pixel: the same at any size


@functools.lru_cache(maxsize=64)  # built in Python; a job's loop asks for the same one at every step
def motion_kernel(length: int, angle: float) -> torch.Tensor:
    """(h, w) weights summing to 1: `length` points one pixel apart on a line through the centre at `angle` degrees
    (counter-clockwise from horizontal), each splatted bilinearly onto the pixel grid; cropped to the rows and
    columns it touches (a horizontal line is the 1 x length box, a vertical one its transpose)."""
    theta = math.radians(angle)
    half = (length - 1) / 2
    steps = torch.arange(length, dtype=torch.float64) - half
    # image rows grow downward; rounded so that a horizontal or vertical line lands exactly on the pixels
    xs, ys = (half + steps * math.cos(theta)).round(decimals=9), (half - steps * math.sin(theta)).round(decimals=9)
    kernel = torch.zeros(length + 1, length + 1, dtype=torch.float64)  # a spare row and column for the splat's edge
    x0, y0 = xs.floor(), ys.floor()
    fx, fy = xs - x0, ys - y0
    for dy, wy in ((0, 1 - fy), (1, fy)):
        for dx, wx in ((0, 1 - fx), (1, fx)):
            kernel.index_put_(((y0 + dy).long(), (x0 + dx).long()), wy * wx / length, accumulate=True)
    kernel = kernel[:length, :length]  # the spare row and column only ever get zero weight: the line ends inside
    rows, cols = kernel.abs().sum(1) > 1e-12, kernel.abs().sum(0) > 1e-12
    r, c = int(rows.float().argmax()), int(cols.float().argmax())  # the first touched; symmetric about the centre
    return kernel[r : length - r, c : length - c]


@dataclass(frozen=True)
class Motion:
    """The image under a motion blur (`motion_kernel`: a line of `length` pixels at `angle` degrees, edges
    replicated) and what it blurs away."""

    length: int
    angle: float = 0.0

    def __call__(self, x: torch.Tensor) -> list[torch.Tensor]:
        channels = x.shape[1]
        weights = motion_kernel(self.length, self.angle).to(dtype=x.dtype, device=x.device)  # (h, w)
        h, w = weights.shape
        kernel = weights.expand(channels, 1, h, w)
        blurred = F.conv2d(F.pad(x, (w // 2, w // 2, h // 2, h // 2), mode="replicate"), kernel, groups=channels)
        return _with_residual(x, [blurred])

    def scaled(self, factor: int) -> Self:
        return replace(self, length=(self.length * factor) | 1)


@dataclass(frozen=True)
class Scale:
    """The image averaged over `factor` x `factor` blocks and blown back up (nearest), and the detail below that."""

    factor: int

    def __call__(self, x: torch.Tensor) -> list[torch.Tensor]:
        coarse = F.avg_pool2d(x, self.factor)
        return _with_residual(x, [coarse.repeat_interleave(self.factor, -2).repeat_interleave(self.factor, -1)])

    def scaled(self, factor: int) -> Self:
        return replace(self, factor=self.factor * factor)


Decomposition = Frequency | Color | Motion | Scale


@dataclass(frozen=True)
class Hold:
    """A constraint after each step (models/sampling.py): component `index` of x_t is replaced by that component of
    the reference noised to the new time, with the reference's own noise (`gens`, as `Inpaint` draws its known
    pixels'). The decompositions are linear, so that is the component of the noised reference (ILVR's update, Choi
    et al. 2021, which Geng et al. use for their inverse problems). At the clean end it is the reference's own.

    The other components are x's, exactly. Where the decomposition is a projection (`Color`, `Scale`) the result's
    component is the reference's too; a blur is not one (a band's blur is not the band), so under `Frequency` and
    `Motion` the result's band is the reference's only up to what a second blur moves."""

    process: NoiseProcess
    decompose: Decomposition
    index: int
    reference: torch.Tensor  # (B, C, H, W) in the model's value range
    gens: list[torch.Generator]  # one per sample

    def __call__(self, x: torch.Tensor, t: float) -> torch.Tensor:
        noised = self.process.noise_to(self.reference, t, randn_like_per_sample(self.reference, self.gens))
        return x - self.decompose(x)[self.index] + self.decompose(noised)[self.index]
