"""DDPM noise schedules: the betas, alphas and cumulative alpha products of the forward process."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor


@dataclass(frozen=True, eq=False)
class DDPMSchedule:
    """A discrete-time variance schedule with T steps, indexed t = 0 .. T-1.

    Computed in float64 and stored as float32 1-D tensors of length T (`eq=False`: tensors have no
    single truth value, so instances compare by identity).
    """

    betas: Tensor  # (T,)
    alphas: Tensor  # (T,)  1 - beta_t
    alphas_cumprod: Tensor  # (T,)  abar_t = prod_{s <= t} alpha_s

    def __post_init__(self) -> None:
        shapes = {self.betas.shape, self.alphas.shape, self.alphas_cumprod.shape}
        if len(shapes) != 1 or self.betas.ndim != 1 or self.betas.numel() == 0:
            raise ValueError(f"schedule tensors must be 1-D of one non-zero length, got {shapes}")

    @property
    def num_timesteps(self) -> int:
        return int(self.betas.shape[0])


def from_betas(betas: Tensor) -> DDPMSchedule:
    """The schedule of given betas (T,), e.g. a diffusers scheduler's."""
    betas = betas.to(torch.float64)  # (T,)
    alphas = 1.0 - betas
    alphas_cumprod = torch.cumprod(alphas, dim=0)
    return DDPMSchedule(betas=betas.float(), alphas=alphas.float(), alphas_cumprod=alphas_cumprod.float())


def linear_schedule(T: int = 300, beta_start: float = 1e-4, beta_end: float = 0.02) -> DDPMSchedule:
    """Betas evenly spaced from beta_start to beta_end inclusive (Ho et al. 2020; CS180 uses T=300)."""
    if T < 1:
        raise ValueError(f"T must be >= 1, got {T}")
    if not 0.0 < beta_start <= beta_end < 1.0:
        raise ValueError(f"need 0 < beta_start <= beta_end < 1, got {beta_start}, {beta_end}")
    return from_betas(torch.linspace(beta_start, beta_end, T, dtype=torch.float64))


def cosine_schedule(T: int, s: float = 0.008, max_beta: float = 0.999) -> DDPMSchedule:
    """The cosine schedule of Improved DDPM (Nichol & Dhariwal 2021, eq. 17).

    abar(t) = f(t) / f(0) with f(t) = cos^2(((t / T + s) / (1 + s)) * pi / 2), and
    beta_t = min(1 - abar(t + 1) / abar(t), max_beta); the clip keeps the last steps from being
    singular (beta = 1 at t = T).
    """
    if T < 1:
        raise ValueError(f"T must be >= 1, got {T}")
    if not 0.0 < max_beta < 1.0:
        raise ValueError(f"max_beta must lie in (0, 1), got {max_beta}")
    steps = torch.arange(T + 1, dtype=torch.float64) / T  # (T+1,)  t / T
    f = torch.cos((steps + s) / (1.0 + s) * (math.pi / 2)) ** 2
    abar = f / f[0]
    betas = (1.0 - abar[1:] / abar[:-1]).clamp(max=max_beta)  # (T,)
    return from_betas(betas)


def make_schedule(kind: str, T: int, beta_start: float, beta_end: float) -> DDPMSchedule:
    """Build a schedule by name: "linear" or "cosine" (the cosine schedule ignores the beta range)."""
    if kind == "linear":
        return linear_schedule(T, beta_start, beta_end)
    if kind == "cosine":
        return cosine_schedule(T)
    raise ValueError(f"unknown schedule kind {kind!r}; expected 'linear' or 'cosine'")


def eps_loss_weights(kind: str, alphas_cumprod: Tensor, gamma: float = 5.0) -> Tensor:
    """(T,) per-timestep weights of the noise-prediction loss, normalised to mean 1 over the schedule.

    - "uniform": 1 (the DDPM spec, Ho et al.'s simple loss).
    - "v": 1 / abar_t = 1 + 1 / SNR_t, what a v-prediction loss weighs the same error by (Salimans & Ho 2022); as
      flow matching's velocity loss does, it weighs the noisy steps, where a digit's shape and class are decided,
      above the nearly clean ones.
    - "min-snr": min(SNR_t, gamma) / SNR_t (Hang et al. 2023, Min-SNR-gamma): the nearly clean steps, whose noise is
      hardest to tell and least worth telling, weigh less.

    The mean of 1 keeps the loss on the spec's scale, so gradient clipping and the divergence check act alike.
    """
    snr = alphas_cumprod.double() / (1 - alphas_cumprod.double())  # (T,)
    if kind == "uniform":
        w = torch.ones_like(snr)
    elif kind == "v":
        w = 1 + 1 / snr
    elif kind == "min-snr":
        w = snr.clamp(max=gamma) / snr
    else:
        raise ValueError(f"unknown loss weighting {kind!r}; expected 'uniform', 'v' or 'min-snr'")
    return (w / w.mean()).float()
