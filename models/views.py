"""Views for visual anagrams: orthogonal transforms of an image, each with its inverse (Geng et al., CS180 A 1.8).

Being orthogonal, a view maps a noise estimate as it maps the image, so an estimate made on `view(x)` is brought
back with `inverse`. A per-pixel map that is not an image (IF's learned variance: how much noise to add where) moves
with the pixels but keeps its sign: `inverse_map`.
"""

from collections.abc import Callable
from dataclasses import dataclass

import torch

Transform = Callable[[torch.Tensor], torch.Tensor]


@dataclass(frozen=True)
class View:
    name: str
    view: Transform
    inverse: Transform
    inverse_map: Transform  # `inverse` for a per-pixel map: where each value goes, its sign unchanged


def _flip(x: torch.Tensor) -> torch.Tensor:
    return torch.flip(x, dims=[-2])  # upside down, as the course does


def _rotate_180(x: torch.Tensor) -> torch.Tensor:
    return torch.rot90(x, 2, dims=(-2, -1))


def _negate(x: torch.Tensor) -> torch.Tensor:
    return -x


def _identity(x: torch.Tensor) -> torch.Tensor:
    return x


VIEWS = {
    "flip": View("flip", _flip, _flip, _flip),
    "rotate_180": View("rotate_180", _rotate_180, _rotate_180, _rotate_180),
    "negate": View("negate", _negate, _negate, _identity),
    "identity": View("identity", _identity, _identity, _identity),
}
