"""Views for visual anagrams: orthogonal transforms of an image, each with its inverse (Geng et al., CS180 A 1.8):
flips, turns, transposes, skews, shuffles of patches or pixels, jigsaws and inner rotations, all on square images.

Being orthogonal, a view maps a noise estimate as it maps the image, so an estimate made on `view(x)` is brought
back with `inverse`. A per-pixel map that is not an image (IF's learned variance: how much noise to add where) moves
with the pixels but keeps its sign: `inverse_map`.
"""

import functools
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


# The views below are permutations of pixel positions (Geng, Park & Owens, "Visual Anagrams", CVPR 2024), each made by
# rearranging a grid of flat pixel indices with the same tensor ops the view means; the inverse is the permutation's
# argsort. No sign changes, so `inverse_map` is `inverse`. Built once per image size and device.
Arrange = Callable[[torch.Tensor], torch.Tensor]  # an (N, N) grid -> the same grid rearranged
TILES = 4  # pieces a side for the tiled views: divides 28, 64 and 256 (tiles of 7, 16 and 64 pixels)
SEED = 0  # the fixed seed of the shuffled views: the same view on every run


def _rotate_cw(g: torch.Tensor) -> torch.Tensor:
    return torch.rot90(g, -1, dims=(-2, -1))


def _rotate_ccw(g: torch.Tensor) -> torch.Tensor:
    return torch.rot90(g, 1, dims=(-2, -1))


def _transpose(g: torch.Tensor) -> torch.Tensor:
    return g.transpose(-2, -1)


def _skew(g: torch.Tensor, factor: float = 1.5) -> torch.Tensor:
    """Column j rolled down by int(factor * (j - N // 2)) pixels, as the paper's SkewView."""
    n = g.shape[-1]
    shift = torch.tensor([int(factor * (j - n // 2)) for j in range(n)])
    rows = (torch.arange(n)[:, None] - shift[None, :]) % n
    return torch.gather(g, 0, rows)


def _tiles(g: torch.Tensor, k: int) -> torch.Tensor:
    """(N, N) -> (k * k, N / k, N / k): the grid's k x k square tiles, row by row."""
    n = g.shape[-1]
    if n % k:
        raise ValueError(f"a tiled view needs a side divisible by {k}, not {n}")
    s = n // k
    return g.reshape(k, s, k, s).permute(0, 2, 1, 3).reshape(k * k, s, s)


def _untiles(t: torch.Tensor, k: int) -> torch.Tensor:
    s = t.shape[-1]
    return t.reshape(k, k, s, s).permute(0, 2, 1, 3).reshape(k * s, k * s)


def _shuffle(count: int, seed: int) -> torch.Tensor:
    return torch.randperm(count, generator=torch.Generator().manual_seed(seed))


def _patch_permute(g: torch.Tensor, tiles: int = TILES, seed: int = SEED) -> torch.Tensor:
    """The tiles x tiles square patches shuffled by a fixed permutation (the same at every size)."""
    return _untiles(_tiles(g, tiles)[_shuffle(tiles * tiles, seed)], tiles)


def _pixel_permute(g: torch.Tensor, seed: int = SEED) -> torch.Tensor:
    """Every pixel moved by one fixed permutation of the N * N positions."""
    return g.flatten()[_shuffle(g.numel(), seed)].view_as(g)


def _jigsaw(g: torch.Tensor, tiles: int = TILES, seed: int = SEED) -> torch.Tensor:
    """The tiles x tiles square pieces shuffled by a fixed permutation, each piece also turned 0-3 quarter turns."""
    gen = torch.Generator().manual_seed(seed)
    order = torch.randperm(tiles * tiles, generator=gen)
    turns = torch.randint(0, 4, (tiles * tiles,), generator=gen)
    pieces = _tiles(g, tiles)[order]
    return _untiles(torch.stack([torch.rot90(p, int(q)) for p, q in zip(pieces, turns, strict=True)]), tiles)


def _inner_circle(g: torch.Tensor, radius: float = 1 / 3) -> torch.Tensor:
    """The pixels within radius * N of the centre turned a quarter turn clockwise, the rest kept (a quarter turn
    about the centre maps the pixel grid and the centred disc onto themselves, so no pixel is interpolated)."""
    n = g.shape[-1]
    c = (n - 1) / 2
    y, x = torch.meshgrid(torch.arange(n) - c, torch.arange(n) - c, indexing="ij")
    inside = y**2 + x**2 <= (radius * n) ** 2
    return torch.where(inside, _rotate_cw(g), g)


def _square_hinge(g: torch.Tensor) -> torch.Tensor:
    """The four quadrants each turned a quarter turn clockwise in place, as if swung on hinges at their centres."""
    return _untiles(torch.stack([_rotate_cw(q) for q in _tiles(g, 2)]), 2)


@functools.lru_cache(maxsize=64)
def _permutation(arrange: Arrange, n: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """(where each output pixel comes from, its inverse) as flat indices for an N x N image."""
    source = arrange(torch.arange(n * n).view(n, n)).flatten()
    return source.to(device), torch.argsort(source).to(device)


def _gather(x: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    return x.flatten(-2)[..., index].view(x.shape)


def _permutation_view(name: str, arrange: Arrange) -> View:
    def square(x: torch.Tensor) -> int:
        if x.shape[-1] != x.shape[-2]:
            raise ValueError(f"view {name!r} needs a square image, not {tuple(x.shape[-2:])}")
        return x.shape[-1]

    def forward(x: torch.Tensor) -> torch.Tensor:
        return _gather(x, _permutation(arrange, square(x), x.device)[0])

    def inverse(x: torch.Tensor) -> torch.Tensor:
        return _gather(x, _permutation(arrange, square(x), x.device)[1])

    return View(name, forward, inverse, inverse)


_ARRANGEMENTS: dict[str, Arrange] = {
    "rotate_cw": _rotate_cw,
    "rotate_ccw": _rotate_ccw,
    "transpose": _transpose,
    "skew": _skew,
    "patch_permute": _patch_permute,
    "pixel_permute": _pixel_permute,
    "jigsaw": _jigsaw,
    "inner_circle": _inner_circle,
    "square_hinge": _square_hinge,
}


VIEWS = {
    "flip": View("flip", _flip, _flip, _flip),
    "rotate_180": View("rotate_180", _rotate_180, _rotate_180, _rotate_180),
    "negate": View("negate", _negate, _negate, _identity),
    "identity": View("identity", _identity, _identity, _identity),
    **{name: _permutation_view(name, arrange) for name, arrange in _ARRANGEMENTS.items()},
}
