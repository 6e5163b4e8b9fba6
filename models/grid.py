"""Tile a batch of images into one image, like torchvision.utils.make_grid."""

from __future__ import annotations

import math

import torch
from torch import Tensor


def make_grid(images: Tensor, nrow: int | None = None, padding: int = 2, pad_value: float = 1.0) -> Tensor:
    """Lay out (B, C, H, W) images row-major, nrow per row (default ceil(sqrt(B))), as one (C, H', W').

    H' = rows * (H + padding) + padding and W' = cols * (W + padding) + padding, as in torchvision
    (which, unlike this, also turns 1 channel into 3 and defaults to nrow=8, pad_value=0).
    """
    if images.ndim != 4 or images.shape[0] == 0:
        raise ValueError(f"expected a non-empty (B, C, H, W) batch, got shape {tuple(images.shape)}")
    if padding < 0:
        raise ValueError(f"padding must be >= 0, got {padding}")
    b, c, h, w = images.shape
    if nrow is None:
        nrow = math.ceil(math.sqrt(b))
    if nrow < 1:
        raise ValueError(f"nrow must be >= 1, got {nrow}")
    cols = min(nrow, b)
    rows = math.ceil(b / cols)
    cell_h, cell_w = h + padding, w + padding
    grid = torch.full(
        (c, rows * cell_h + padding, cols * cell_w + padding),
        pad_value,
        dtype=images.dtype,
        device=images.device,
    )  # (C, H', W')
    for k in range(b):
        top, left = (k // cols) * cell_h + padding, (k % cols) * cell_w + padding
        grid[:, top : top + h, left : left + w] = images[k]
    return grid
