"""Forward (noising) processes, and per-sample noise that does not depend on batch composition."""

from __future__ import annotations

import torch
from torch import Tensor


def _per_item(v: Tensor, like: Tensor) -> Tensor:
    """Reshape a (B,) tensor so it broadcasts over the trailing dims of `like`."""
    return v.reshape(-1, *([1] * (like.ndim - 1)))  # (B, 1, 1, 1) for images


def ddpm_forward(x0: Tensor, t: Tensor, alphas_cumprod: Tensor, noise: Tensor) -> Tensor:
    """Sample q(x_t | x_0) (Ho et al. 2020, eq. 4), deterministic given `noise`.

    x_t = sqrt(abar_t) * x_0 + sqrt(1 - abar_t) * eps, one timestep per batch item.
    """
    if t.ndim != 1 or t.shape[0] != x0.shape[0]:
        raise ValueError(f"t must have shape ({x0.shape[0]},), got {tuple(t.shape)}")
    if noise.shape != x0.shape:
        raise ValueError(f"noise shape {tuple(noise.shape)} != x0 shape {tuple(x0.shape)}")
    abar = alphas_cumprod.to(x0.device)[t.to(x0.device, torch.long)].to(x0.dtype)  # (B,)
    abar = _per_item(abar, x0)  # (B, 1, 1, 1)
    return abar.sqrt() * x0 + (1.0 - abar).sqrt() * noise  # (B, C, H, W)


def sigma_forward(x: Tensor, sigma: Tensor, noise: Tensor) -> Tensor:
    """Add Gaussian noise of standard deviation sigma: z = x + sigma * eps (CS180 part B 1.2).

    `sigma` is (B,), one level per batch item, or a scalar tensor shared by the batch.
    """
    if noise.shape != x.shape:
        raise ValueError(f"noise shape {tuple(noise.shape)} != x shape {tuple(x.shape)}")
    sigma = sigma.to(x.device, x.dtype)
    if sigma.ndim == 1:
        if sigma.shape[0] != x.shape[0]:
            raise ValueError(f"sigma must have shape ({x.shape[0]},), got {tuple(sigma.shape)}")
        sigma = _per_item(sigma, x)  # (B, 1, 1, 1)
    elif sigma.ndim != 0:
        raise ValueError(f"sigma must be 0-D or 1-D, got shape {tuple(sigma.shape)}")
    return x + sigma * noise  # (B, C, H, W)


def randn_like_per_sample(x: Tensor, generators: list[torch.Generator]) -> Tensor:
    """Standard normal noise shaped like x, item i drawn from generators[i].

    A sample's noise thus depends only on its own seed, not on its batch-mates. The draws are made
    on the CPU in float32 (the generators must be CPU generators) and then moved to x's device and
    dtype, so CPU and CUDA workers produce the same noise for the same seed.
    """
    if len(generators) != x.shape[0]:
        raise ValueError(f"need one generator per batch item: {len(generators)} != {x.shape[0]}")
    items = [torch.randn(x.shape[1:], generator=g, dtype=torch.float32) for g in generators]
    return torch.stack(items).to(device=x.device, dtype=x.dtype)  # (B, C, H, W)
