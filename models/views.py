"""Views for visual anagrams: orthogonal transforms of an image, each with its inverse (Geng et al., CS180 A 1.8):
flips, turns, transposes, skews, shuffles of patches or pixels, jigsaws and inner rotations, all on square images.

Being orthogonal, a view maps a noise estimate as it maps the image, so an estimate made on `view(x)` is brought
back with `inverse`. A per-pixel map that is not an image (IF's learned variance: how much noise to add where) moves
with the pixels but keeps its sign: `inverse_map`.

`VIEWS` holds each view with its default arguments; `make_view` builds one with its own (a patch size, a seed, a skew
factor, a radius), given at a side `base` and applied at any multiple of it: DeepFloyd IF's stage II (256 px) runs
the views of its stage I (64 px) as the same grid of patches, and the same pixel permutation moving 4 x 4 blocks.
"""

import functools
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

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
# argsort. No sign changes, so `inverse_map` is `inverse`. Built once per view, arguments, size and device.
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
    """The tiles x tiles square patches shuffled by a fixed permutation (the same at every size). With one tile a
    side per pixel of a smaller image, it is that image's pixel permutation blown up to blocks."""
    return _untiles(_tiles(g, tiles)[_shuffle(tiles * tiles, seed)], tiles)


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


Args = tuple[tuple[str, Any], ...]  # a view's arguments, hashable
PARAMS: dict[str, frozenset[str]] = {  # the arguments each view takes; the others take none
    "skew": frozenset({"factor"}),
    "patch_permute": frozenset({"patch_size", "seed"}),
    "jigsaw": frozenset({"patch_size", "seed"}),
    "pixel_permute": frozenset({"seed"}),
    "inner_circle": frozenset({"radius"}),
}


def _grid_tiles(args: dict[str, Any], base: int) -> int:
    """The tiled views' pieces a side: base / patch_size (the same grid at every multiple of `base`), default 4."""
    size: int | None = args.get("patch_size")
    if size is None:
        return TILES
    if size < 1 or base % size:
        raise ValueError(f"patch_size {size} does not divide the side {base}")
    return base // size


def _arrange(name: str, args: dict[str, Any], base: int, g: torch.Tensor) -> torch.Tensor:
    """The (N, N) grid `g` rearranged by view `name` with `args`, its parameters given at side `base` (N a multiple
    of it): the tiled views keep base's grid of patches, pixel_permute moves base's permutation's N/base blocks."""
    seed = int(args.get("seed", SEED))
    if name == "skew":
        return _skew(g, float(args.get("factor", 1.5)))
    if name == "patch_permute":
        return _patch_permute(g, _grid_tiles(args, base), seed)
    if name == "jigsaw":
        return _jigsaw(g, _grid_tiles(args, base), seed)
    if name == "pixel_permute":
        return _patch_permute(g, base, seed)
    if name == "inner_circle":
        return _inner_circle(g, float(args.get("radius", 1 / 3)))
    return _FIXED[name](g)


@functools.lru_cache(maxsize=64)
def _permutation(
    name: str, args: Args, base: int | None, n: int, device: torch.device
) -> tuple[torch.Tensor, torch.Tensor]:
    """(where each output pixel comes from, its inverse) as flat indices for an N x N image."""
    if base is not None and n % base:
        raise ValueError(f"view {name!r} was made for sides that are multiples of {base}, not {n}")
    source = _arrange(name, dict(args), base or n, torch.arange(n * n).view(n, n)).flatten()
    return source.to(device), torch.argsort(source).to(device)


def _gather(x: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    return x.flatten(-2)[..., index].view(x.shape)


@functools.lru_cache(maxsize=256)
def _permutation_view(name: str, args: Args, base: int | None) -> View:
    """One View object per (name, arguments, base): what caches keyed by a view (models/animate.py) hit."""

    def square(x: torch.Tensor) -> int:
        if x.shape[-1] != x.shape[-2]:
            raise ValueError(f"view {name!r} needs a square image, not {tuple(x.shape[-2:])}")
        return x.shape[-1]

    def forward(x: torch.Tensor) -> torch.Tensor:
        return _gather(x, _permutation(name, args, base, square(x), x.device)[0])

    def inverse(x: torch.Tensor) -> torch.Tensor:
        return _gather(x, _permutation(name, args, base, square(x), x.device)[1])

    return View(name, forward, inverse, inverse)


_FIXED: dict[str, Arrange] = {
    "rotate_cw": _rotate_cw,
    "rotate_ccw": _rotate_ccw,
    "transpose": _transpose,
    "square_hinge": _square_hinge,
}
_SIGNED = {
    "flip": View("flip", _flip, _flip, _flip),
    "rotate_180": View("rotate_180", _rotate_180, _rotate_180, _rotate_180),
    "negate": View("negate", _negate, _negate, _identity),
    "identity": View("identity", _identity, _identity, _identity),
}


def make_view(name: str, args: Mapping[str, Any] | None = None, base: int | None = None) -> View:
    """View `name` with its arguments (PARAMS; a missing or None one takes its default: a 4 x 4 grid, seed 0, skew
    factor 1.5, radius 1/3 of the side), given at side `base`, for images whose side is a multiple of `base`
    (stage II's of stage I's); base None: each image's own side."""
    given = {key: value for key, value in (args or {}).items() if value is not None}
    if unknown := set(given) - PARAMS.get(name, frozenset()):
        raise ValueError(f"view {name!r} takes no argument(s) {sorted(unknown)}")
    if name in _SIGNED:
        return _SIGNED[name]
    if name not in _FIXED and name not in PARAMS:
        raise ValueError(f"no view {name!r}")
    if base is not None:
        _grid_tiles(given, base)  # a patch_size that does not divide base: refused now, not at the first image
    return _permutation_view(name, tuple(sorted(given.items())), base)


VIEWS = {name: make_view(name) for name in [*_SIGNED, *_FIXED, *PARAMS]}  # each view at its defaults
