"""Noise processes: how an image is noised to time t, which times a run visits, and one step back toward clean.

Both kinds share one small interface, so the sampling loop, SDEdit and inpainting never ask which they drive:

- `times(steps, stride)`: the times a run visits, noisiest first, ending at the clean end.
- `noise_to(x0, t, noise)`: the forward process.
- `model_time(t)`: what the network is given for time t (normalised to [0, 1]).
- `sigma(model_time)`: the noise level at a time the network is given, as k-diffusion and EDM measure it: the
  state, rescaled to the data's scale, is data + sigma * noise. What a guidance interval is measured in.
- `step(x, est, t, t_next, noise)`: one step from an estimate; `noise` is None where the step is deterministic. An
  estimate may carry a learned variance past the image's channels (DeepFloyd IF): the DDPM step then uses it.
- `preview(x, est, t)`: the clean image the estimate implies.

`clipped(process, lo, hi)` is the same process with each step's clean estimate clipped to the data's range before it
steps (guided-diffusion's `clip_denoised`, diffusers' `clip_sample`): a guided estimate that overshoots the range
(CFG at gamma 5 does, at high noise) is then not carried into the state.

DDPM times are indices into the schedule (T - 1 ... 0), with -1 standing for the clean image (abar = 1).
Flow times run from 0 (pure noise) to 1 (data): x_t = (1 - t) noise + t x1 (CS180 part B, eq. B.3).
"""

import math
from dataclasses import dataclass, replace
from typing import Protocol

import torch

from models.schedules import DDPMSchedule

CLEAN = -1  # the DDPM time of a clean image


class NoiseProcess(Protocol):
    def times(self, steps: int | None = None, stride: int | None = None) -> list[float]: ...

    def noise_to(self, x0: torch.Tensor, t: float, noise: torch.Tensor) -> torch.Tensor: ...

    def model_time(self, t: float) -> float: ...

    def sigma(self, model_time: float) -> float: ...

    def step(
        self, x: torch.Tensor, est: torch.Tensor, t: float, t_next: float, noise: torch.Tensor | None
    ) -> torch.Tensor: ...

    def is_stochastic(self, t_next: float) -> bool: ...

    def preview(self, x: torch.Tensor, est: torch.Tensor, t: float) -> torch.Tensor: ...


@dataclass(frozen=True)
class DDPM:
    """Noise prediction on a beta schedule; the posterior step of CS180 algorithm B.2, strided as in part A 1.4.

    The step's variance is fixed (`variance`), or learned where the estimate carries a second part after the image's
    channels, v in [-1, 1] per pixel: log sigma^2 = (v + 1) / 2 log beta + (1 - v) / 2 log beta_tilde (Nichol &
    Dhariwal 2021, eq. 15; diffusers' `learned_range`, which the course's `add_variance` calls).
    """

    schedule: DDPMSchedule
    clip: tuple[float, float] | None = None  # the clean estimate's range in a step; None: unclipped (the spec)

    def abar(self, t: float) -> float:
        """abar at a timestep; between two (a Karras schedule's times, models/solvers.py) log sigma is
        interpolated, as diffusers maps sigmas to times."""
        if t == CLEAN:
            return 1.0
        lo, nearest = math.floor(t), round(t)
        if abs(t - nearest) < 1e-4 or lo + 1 >= self.schedule.num_timesteps:  # a timestep, up to float32 rounding
            return float(self.schedule.alphas_cumprod[min(nearest, self.schedule.num_timesteps - 1)])
        a, b = (float(self.schedule.alphas_cumprod[k]) for k in (lo, lo + 1))
        w = t - lo
        log_sigma = (1 - w) * 0.5 * math.log((1 - a) / a) + w * 0.5 * math.log((1 - b) / b)
        return 1 / (1 + math.exp(2 * log_sigma))

    def times(self, steps: int | None = None, stride: int | None = None) -> list[float]:
        """All T timesteps, every `stride`-th from the largest multiple below T (990, 960, ... for T = 1000),
        or `steps` evenly spaced; then the clean end."""
        last = self.schedule.num_timesteps - 1
        if steps is not None:
            visited = torch.linspace(last, 0, steps).round().long().unique_consecutive().tolist()
        else:
            stride = stride or 1
            visited = list(range(stride * (last // stride), -1, -stride))
        return [float(t) for t in visited] + [float(CLEAN)]

    def noise_to(self, x0: torch.Tensor, t: float, noise: torch.Tensor) -> torch.Tensor:
        abar = self.abar(t)
        return math.sqrt(abar) * x0 + math.sqrt(1 - abar) * noise  # x_t = sqrt(abar) x0 + sqrt(1 - abar) eps

    def model_time(self, t: float) -> float:
        return t / self.schedule.num_timesteps  # the spec's normalisation: t / T

    def sigma(self, model_time: float) -> float:
        abar = self.abar(round(model_time * self.schedule.num_timesteps))
        return math.sqrt((1 - abar) / abar)  # x_t / sqrt(abar) = x0 + sqrt((1 - abar) / abar) eps

    def preview(self, x: torch.Tensor, est: torch.Tensor, t: float) -> torch.Tensor:
        abar, eps = self.abar(t), est[:, : x.shape[1]]
        return (x - math.sqrt(1 - abar) * eps) / math.sqrt(abar)  # (1) x0 = (x_t - sqrt(1 - abar_t) eps) / sqrt(abar_t)

    def is_stochastic(self, t_next: float) -> bool:
        return t_next != CLEAN  # the last step, into the clean image, adds no noise (z = 0 when t = 1)

    def step(
        self, x: torch.Tensor, est: torch.Tensor, t: float, t_next: float, noise: torch.Tensor | None
    ) -> torch.Tensor:
        abar, abar_next = self.abar(t), self.abar(t_next)
        alpha = abar / abar_next  # (2) alpha_t = abar_t / abar_t', beta_t = 1 - alpha_t over the stride
        beta = 1 - alpha
        x0 = clamp(self.preview(x, est, t), self.clip)
        # (3) the posterior mean, from the clean estimate and x_t
        mean = (math.sqrt(abar_next) * beta / (1 - abar)) * x0 + (math.sqrt(alpha) * (1 - abar_next) / (1 - abar)) * x
        if noise is None:
            return mean
        if est.shape[1] > x.shape[1]:
            return mean + self.learned_std(est[:, x.shape[1] :], t, t_next) * noise  # (3) + sigma z, sigma learned
        return mean + math.sqrt(self.variance(t, t_next)) * noise  # (3) + sigma z

    def learned_std(self, v: torch.Tensor, t: float, t_next: float) -> torch.Tensor:
        """sigma per pixel from a learned v in [-1, 1]: between the posterior's beta_tilde (v = -1) and beta (v = 1),
        both over the stride t -> t_next, as diffusers' DDPMScheduler takes them once its timesteps are set."""
        abar, abar_next = self.abar(t), self.abar(t_next)
        beta = 1 - abar / abar_next
        beta_tilde = max((1 - abar_next) / (1 - abar) * beta, 1e-20)
        frac = (v + 1) / 2
        return torch.exp(0.5 * (frac * math.log(beta) + (1 - frac) * math.log(beta_tilde)))

    def variance(self, t: float, t_next: float) -> float:
        """sigma^2 of the step's noise: beta_t for one schedule step (B.2, the spec); over a stride the posterior's
        own variance beta_tilde = (1 - abar_t') / (1 - abar_t) beta, since beta over a stride (the variance of the
        whole forward jump) puts back most of the noise just removed: the last strided step would leave visible grain.
        """
        abar, abar_next = self.abar(t), self.abar(t_next)
        beta = 1 - abar / abar_next
        return beta if t - t_next <= 1 else (1 - abar_next) / (1 - abar) * beta


@dataclass(frozen=True)
class Flow:
    """Velocity prediction, integrated with Euler steps from noise (t = 0) to data (t = 1): CS180 algorithm B.4."""

    default_steps: int = 50
    clip: tuple[float, float] | None = None  # the clean estimate's range in a step; None: unclipped (the spec)

    def times(self, steps: int | None = None, stride: int | None = None) -> list[float]:
        n = steps or self.default_steps
        return [i / n for i in range(n + 1)]

    def noise_to(self, x0: torch.Tensor, t: float, noise: torch.Tensor) -> torch.Tensor:
        return (1 - t) * noise + t * x0

    def model_time(self, t: float) -> float:
        return t

    def sigma(self, model_time: float) -> float:
        return (1 - model_time) / model_time if model_time > 0 else math.inf  # x_t / t = x1 + (1 - t) / t noise

    def preview(self, x: torch.Tensor, est: torch.Tensor, t: float) -> torch.Tensor:
        return x + (1 - t) * est  # x1 = x_t + (1 - t) u

    def is_stochastic(self, t_next: float) -> bool:
        return False

    def step(
        self, x: torch.Tensor, est: torch.Tensor, t: float, t_next: float, noise: torch.Tensor | None
    ) -> torch.Tensor:
        if self.clip is not None and t < 1:
            est = (clamp(self.preview(x, est, t), self.clip) - x) / (1 - t)  # the velocity toward the clipped x1
        return x + (t_next - t) * est  # x_t' = x_t + (t' - t) u


def clamp(x: torch.Tensor, bounds: tuple[float, float] | None) -> torch.Tensor:
    return x if bounds is None else x.clamp(*bounds)


def clipped(process: NoiseProcess, lo: float, hi: float) -> NoiseProcess:
    """`process` with every step's clean estimate clipped to [lo, hi]."""
    assert isinstance(process, DDPM | Flow), f"no clipping for {type(process).__name__}"
    return replace(process, clip=(lo, hi))
