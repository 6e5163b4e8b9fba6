"""The plain sampling loops of the CS180 spec for the class-conditioned UNet, written straightforwardly: the reference
that the service's sampler is timed and checked against (bench/sampling.py, tests/bench/test_bench_smoke.py).

- `ddpm_sample`: algorithm B.4 of the DDPM spec. T = 300 steps, t from T down to 1; at each step the UNet runs twice,
  conditional then unconditional (class vector 0), eps = eps_u + gamma (eps_c - eps_u), then the posterior step.
  The spec's t in {1 .. T} is the schedule index t - 1 in {0 .. T-1}, and the UNet is given (t - 1) / T, as in
  training (models/training.py).
- `flow_sample`: algorithm B.4 of the flow matching spec. Euler from t = 0 (noise) to 1 (data) in `steps` steps of
  1 / steps, two passes per step, u = u_u + gamma (u_c - u_u).

Eager float32, no global RNG: every draw comes from one torch.Generator per sample, drawn the way
models.forward.randn_like_per_sample draws (sample i's (C, H, W) noise from generators[i], float32 on the CPU), so the
same seeds give the service's pixels up to float rounding. The schedule's coefficients are float64 scalars (the
images stay float32): with float32 ones, 1 - alpha_bar_1 loses digits and the last step alone scales the image by
1 - 1.7e-4 (beta_1 / (1 - alpha_bar_1) should be 1), which is rounding of the reference, not of the service.
"""

from __future__ import annotations

import torch
from torch import Tensor

from models.unet import CS180UNet


def image_shape(unet: CS180UNet) -> tuple[int, int, int]:
    """(C, H, W) of the UNet's images."""
    channels, size = unet.config["in_channels"], unet.config["image_size"]
    return channels, size, size


def noise(gens: list[torch.Generator], shape: tuple[int, ...]) -> Tensor:
    """(len(gens), *shape) standard normal noise, sample i drawn from gens[i]."""
    return torch.stack([torch.randn(shape, generator=g, dtype=torch.float32) for g in gens])


@torch.no_grad()
def ddpm_sample(unet: CS180UNet, c: Tensor, gens: list[torch.Generator], gamma: float = 5.0, T: int = 300) -> Tensor:
    """CFG samples (B, C, H, W) of the classes c (B,) from a DDPM-trained UNet (noise prediction)."""
    betas = torch.linspace(1e-4, 0.02, T, dtype=torch.float64)  # the spec's recipe, in float64: see the module doc
    alphas = 1 - betas
    alphas_bar = torch.cumprod(alphas, dim=0)
    x = noise(gens, image_shape(unet))  # x_T ~ N(0, I)
    B = x.shape[0]
    for t in range(T - 1, -1, -1):  # the spec's t = T .. 1
        z = noise(gens, image_shape(unet)) if t > 0 else torch.zeros_like(x)  # z = 0 at the spec's t = 1
        t_in = torch.full((B,), t / T)
        eps_c = unet(x, t_in, c)  # eps_theta(x_t, t, c)
        eps_u = unet(x, t_in)  # eps_theta(x_t, t, 0): no class
        eps = eps_u + gamma * (eps_c - eps_u)
        abar_t = alphas_bar[t]
        abar_prev = alphas_bar[t - 1] if t > 0 else torch.tensor(1.0, dtype=torch.float64)  # clean: alpha_bar = 1
        x0_hat = (x - torch.sqrt(1 - abar_t) * eps) / torch.sqrt(abar_t)
        x = (
            torch.sqrt(abar_prev) * betas[t] / (1 - abar_t) * x0_hat
            + torch.sqrt(alphas[t]) * (1 - abar_prev) / (1 - abar_t) * x
            + torch.sqrt(betas[t]) * z
        )
    return x


@torch.no_grad()
def flow_sample(unet: CS180UNet, c: Tensor, gens: list[torch.Generator], gamma: float = 5.0, steps: int = 50) -> Tensor:
    """CFG samples (B, C, H, W) of the classes c (B,) from a flow-matching UNet (velocity prediction)."""
    x = noise(gens, image_shape(unet))  # x_0 ~ N(0, I)
    B = x.shape[0]
    for i in range(steps):
        t_in = torch.full((B,), i / steps)
        u_u = unet(x, t_in)  # u_theta(x_t, t, 0)
        u_c = unet(x, t_in, c)  # u_theta(x_t, t, c)
        u = u_u + gamma * (u_c - u_u)
        x = x + (1 / steps) * u
    return x
