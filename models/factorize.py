"""Decompositions for factorized diffusion (Geng et al., "Factorized Diffusion", ECCV 2024): an image as a sum of
components, each of which a hybrid job generates under its own prompt (models/guidance.py, `Factorized`).

Each decomposition maps x (B, C, H, W) to its components, coarsest first; the last is x minus the others, so they
sum to x exactly (tests/models/test_factorize.py). A hybrid of CS180 A 1.9 is `Frequency` with one sigma. `Hold`
keeps one component on a reference image's (the paper's inverse problems).
"""

import itertools
from dataclasses import dataclass

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


@dataclass(frozen=True)
class Color:
    """Grayscale (each pixel's mean over the channels, in every channel) and the colour around it."""

    def __call__(self, x: torch.Tensor) -> list[torch.Tensor]:
        return _with_residual(x, [x.mean(dim=1, keepdim=True).expand_as(x)])


@dataclass(frozen=True)
class Motion:
    """The image under a horizontal motion blur (a box of `length` pixels, edges replicated) and what it blurs away."""

    length: int

    def __call__(self, x: torch.Tensor) -> list[torch.Tensor]:
        channels, pad = x.shape[1], self.length // 2
        kernel = torch.full((channels, 1, 1, self.length), 1.0 / self.length, dtype=x.dtype, device=x.device)
        blurred = F.conv2d(F.pad(x, (pad, pad, 0, 0), mode="replicate"), kernel, groups=channels)
        return _with_residual(x, [blurred])


@dataclass(frozen=True)
class Scale:
    """The image averaged over `factor` x `factor` blocks and blown back up (nearest), and the detail below that."""

    factor: int

    def __call__(self, x: torch.Tensor) -> list[torch.Tensor]:
        coarse = F.avg_pool2d(x, self.factor)
        return _with_residual(x, [coarse.repeat_interleave(self.factor, -2).repeat_interleave(self.factor, -1)])


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
