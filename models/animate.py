"""The animation of a visual anagram (issue 26's animation.gif): the image held in each view, then turned into the
next, and from the last view back to the first so that the loop is seamless.

Every view in models/views.py is a signed permutation of the pixels, so the move needs nothing from the view but the
view itself: applied to an index image (1, 2, ..., H * W) it tells where each output pixel comes from (|value| - 1)
and with which sign. Between two views each pixel of the first view's image travels to its place in the second's,
its value going linearly from a to sign * a, and an in-between frame is splatted bilinearly onto the pixel grid.

Paths are straight lines, except where the move is, for most moving pixels, one turn about the image centre by a
multiple of a quarter turn (rotate_cw, rotate_ccw, rotate_180, the disc of inner_circle): those pixels go along the
arc, so turns look like turns. A flip reads as the image squashing through its middle line. Places no pixel reaches
take 0 in the model's value space: mid-grey for a [-1, 1] model, black for [0, 1], and the value a negated image
passes through halfway.
"""

import functools
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch

from models.views import View

EMPTY = 1e-3  # a place whose summed splat weight is below this is left empty
TURNS = {1: math.pi / 2, 2: math.pi, 3: -math.pi / 2}  # quarter turns clockwise -> the angle the arc sweeps


@dataclass(frozen=True)
class Path:
    """How each pixel of the first view's image, in flat order, moves to the second view's image."""

    start: torch.Tensor  # (P, 2) float64 (row, column)
    end: torch.Tensor  # (P, 2)
    angle: torch.Tensor  # (P,) radians swept about the centre; 0 for a straight line
    sign: torch.Tensor  # (P,) +1 or -1: the value's sign in the second image relative to the first
    centre: tuple[float, float]


@functools.lru_cache(maxsize=32)
def _signed_source(view: View, h: int, w: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(the flat source pixel of each output pixel, its sign), read off the view applied to an index image."""
    index = torch.arange(1, h * w + 1, dtype=torch.float64).view(1, 1, h, w)
    out = view.view(index).flatten()
    source = out.abs().round().long() - 1
    if out.numel() != h * w or not torch.equal(torch.sort(source).values, torch.arange(h * w)):
        raise ValueError(f"view {view.name!r} is not a signed permutation of the pixels")
    return source, torch.sign(out)


def _turned(pos: torch.Tensor, centre: tuple[float, float], quarter_turns: int) -> torch.Tensor:
    """Positions (P, 2) turned clockwise on screen (rows point down) about the centre, as torch.rot90(g, -k) does."""
    y, x = pos[:, 0] - centre[0], pos[:, 1] - centre[1]
    for _ in range(quarter_turns):
        y, x = x, -y
    return torch.stack([y + centre[0], x + centre[1]], dim=1)


@functools.lru_cache(maxsize=16)  # 3 MB each at 256 px
def path(a: View, b: View, h: int, w: int) -> Path:
    """The move from a(x) to b(x): the pixel at p in a(x) goes where b puts the same source pixel."""
    src_a, sign_a = _signed_source(a, h, w)
    src_b, sign_b = _signed_source(b, h, w)
    dest = torch.argsort(src_b)[src_a]  # argsort(src_b): where b puts each source pixel
    grid = torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij")
    start = torch.stack([g.flatten() for g in grid], dim=1).double()
    end = start[dest]
    centre = ((h - 1) / 2, (w - 1) / 2)
    angle = torch.zeros(h * w, dtype=torch.float64)
    moving = (end != start).any(dim=1)
    matches = {k: moving & (_turned(start, centre, k) == end).all(dim=1) for k in TURNS}
    k, arc = max(matches.items(), key=lambda kv: int(kv[1].sum()))
    if 2 * int(arc.sum()) >= max(int(moving.sum()), 1):  # one turn moves most moving pixels: not a coincidence
        angle[arc] = TURNS[k]
    return Path(start, end, angle, sign_a * sign_b[dest], centre)


def positions(p: Path, s: float) -> torch.Tensor:
    """(P, 2) positions at s in [0, 1]: along the arc where the path turns, on the straight line elsewhere."""
    line = p.start + s * (p.end - p.start)
    cy, cx = p.centre
    y, x = p.start[:, 0] - cy, p.start[:, 1] - cx
    cos, sin = torch.cos(s * p.angle), torch.sin(s * p.angle)  # clockwise on screen for a positive angle
    arc = torch.stack([y * cos + x * sin + cy, x * cos - y * sin + cx], dim=1)
    return torch.where((p.angle != 0)[:, None], arc, line)


def splat(values: torch.Tensor, pos: torch.Tensor, h: int, w: int) -> torch.Tensor:
    """Values (B, C, P) put at positions (P, 2) on an h x w grid with bilinear weights, normalised by the summed
    weight; places under EMPTY weight are 0."""
    floor = pos.floor()
    frac = pos - floor
    corner = floor.long()
    idx, wts, pts = [], [], []
    for dy in (0, 1):
        for dx in (0, 1):
            y, x = corner[:, 0] + dy, corner[:, 1] + dx
            wt = (frac[:, 0] if dy else 1 - frac[:, 0]) * (frac[:, 1] if dx else 1 - frac[:, 1])
            inside = (y >= 0) & (y < h) & (x >= 0) & (x < w)
            idx.append((y * w + x)[inside])
            wts.append(wt[inside])
            pts.append(inside.nonzero().squeeze(1))
    device = values.device
    index, point = torch.cat(idx).to(device), torch.cat(pts).to(device)
    weight = torch.cat(wts).to(device, values.dtype)
    flat = values.reshape(-1, values.shape[-1])
    acc = torch.zeros(flat.shape[0], h * w, dtype=values.dtype, device=device)
    acc.index_add_(1, index, flat[:, point] * weight)
    total = torch.zeros(h * w, dtype=values.dtype, device=device).index_add_(0, index, weight)
    out = torch.where(total > EMPTY, acc / total.clamp_min(EMPTY), torch.zeros_like(acc))
    return out.view(*values.shape[:-1], h, w)


def transition(x: torch.Tensor, a: View, b: View, s: float) -> torch.Tensor:
    """The frame at s in [0, 1] of the move from a(x) to b(x), in the model's value space (float32)."""
    return _frame(a.view(x).float(), path(a, b, x.shape[-2], x.shape[-1]), s)


def _frame(start: torch.Tensor, p: Path, s: float) -> torch.Tensor:
    values = start.flatten(-2) * (1 + s * (p.sign.to(start) - 1))  # a -> sign * a
    return splat(values, positions(p, s), start.shape[-2], start.shape[-1])


def animation_frames(
    x: torch.Tensor,
    views: Sequence[View],
    to_unit: Callable[[torch.Tensor], torch.Tensor],
    steps: int = 12,
    hold: int = 8,
) -> list[torch.Tensor]:
    """Frames (B, C, H, W) in [0, 1] of x (B, C, H, W, in the model's value range) shown in each view in turn:
    `hold` frames of v_k(x), then `steps` frames moving to v_{k+1}(x), the last view moving back to the first.
    len(frames) == len(views) * (hold + steps); the first and the last frame show v_0(x)."""
    if not views:
        raise ValueError("an animation needs at least one view")
    if steps < 1 or hold < 1:
        raise ValueError(f"steps and hold must be at least 1, not {steps} and {hold}")
    h, w = x.shape[-2:]
    frames: list[torch.Tensor] = []
    for k, a in enumerate(views):
        start = a.view(x).float()
        held = to_unit(start).clamp(0, 1)
        frames += [held.clone() for _ in range(hold)]
        p = path(a, views[(k + 1) % len(views)], h, w)
        frames += [to_unit(_frame(start, p, i / steps)).clamp(0, 1) for i in range(1, steps + 1)]
    return frames
