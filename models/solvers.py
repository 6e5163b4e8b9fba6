"""Solvers: how a run steps from one time to the next, given a `denoise(x, t)` that makes one guided network call.

A solver is built for one run (`make_solver`): it knows the times it visits (`times`, in the noise process's own
units, noisiest first, ending at the clean end) and steps from `times[i]` to `times[i + 1]`, calling `denoise` once or
more and keeping what a multistep method remembers. The state between steps is always the process's own x_t, so
everything around the loop (inpainting's re-noised known region, previews, SDEdit's start, guidance intervals) works
with every solver.

Which are written here and which are diffusers' (docs/api.md, "Samplers"):
- eps models (noise prediction on a beta schedule): "ddpm" is the process's own ancestral step (models/processes.py);
  "ddim" is written here (the DDPM step generalised by eta: one formula, no state), checked against diffusers'
  DDIMScheduler step by step; "dpmpp_2m", "dpmpp_sde" (DPM-Solver++(2M) and its SDE variant), "unipc", "euler" and
  "heun" (Karras sigmas) wrap diffusers' schedulers, whose multistep bookkeeping and sigma schedules are what
  the field runs; only the conversion (their VE-scaled state for Euler and Heun, our per-sample noise) is ours.
- flow models (velocity, x_t = (1 - t) noise + t data): "euler" is the process's own step; "heun", "midpoint" and
  "ab2" (Adams-Bashforth 2) are written here: diffusers' flow schedulers count time the other way (sigma from 1 to
  0) and have neither a midpoint nor a multistep solver. tests/models/test_solvers.py measures each one's order.
"""

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np
import torch
from diffusers import (
    DPMSolverMultistepScheduler,
    EulerDiscreteScheduler,
    HeunDiscreteScheduler,
    UniPCMultistepScheduler,
)

from models.forward import randn_like_per_sample
from models.processes import CLEAN, DDPM, Flow, NoiseProcess, clamp

Denoise = Callable[[torch.Tensor, float], torch.Tensor]  # (x at time t, t) -> the guided estimate


class Solver(Protocol):
    @property
    def process(self) -> NoiseProcess: ...

    @property
    def times(self) -> list[float]: ...

    def step(
        self, denoise: Denoise, x: torch.Tensor, i: int, gens: list[torch.Generator]
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """x at times[i + 1], and the first estimate made at times[i] (what a preview shows)."""
        ...


@dataclass
class Native:
    """The process's own one-call step: ancestral DDPM (CS180 B.2), or Euler for a flow (B.4)."""

    process: NoiseProcess
    times: list[float]

    def step(
        self, denoise: Denoise, x: torch.Tensor, i: int, gens: list[torch.Generator]
    ) -> tuple[torch.Tensor, torch.Tensor]:
        t, t_next = self.times[i], self.times[i + 1]
        est = denoise(x, t)
        noise = randn_like_per_sample(x, gens) if self.process.is_stochastic(t_next) else None
        return self.process.step(x, est, t, t_next, noise), est


def spaced(num_timesteps: int, steps: int, spacing: str) -> list[int]:
    """`steps` timesteps of a T-step schedule, noisiest first, as diffusers' `timestep_spacing` picks them (Lin et al.
    2024, table 2), except that "trailing" never yields a negative timestep: numpy's arange can overshoot by one
    element when T / steps is not exact (diffusers 0.42 then visits timestep -1)."""
    T, k = num_timesteps, np.arange(steps)
    if spacing == "linspace":
        return [int(t) for t in np.linspace(0, T - 1, steps).round()[::-1]]
    if spacing == "leading":
        return [int(t) for t in (k * (T // steps))[::-1]]
    if spacing == "trailing":
        return [int(t) for t in (T - k * (T / steps)).round() - 1]
    raise ValueError(f"unknown spacing {spacing!r}")


def clipped_eps(process: DDPM, x: torch.Tensor, est: torch.Tensor, t: float) -> torch.Tensor:
    """The noise estimate (the image's channels: a learned variance is the ancestral step's alone), with the
    process's clipping applied: recomputed from the clipped clean image, which `process.preview` then gives back."""
    eps = est[:, : x.shape[1]]
    if process.clip is None or t == CLEAN:
        return eps
    abar = process.abar(t)
    x0 = clamp(process.preview(x, eps, t), process.clip)
    return (x - math.sqrt(abar) * x0) / math.sqrt(1 - abar)


@dataclass
class DDIM:
    """DDIM (Song et al. 2021, eq. 12): x' = sqrt(abar') x0 + sqrt(1 - abar' - s^2) eps + s z, with
    s = eta sqrt((1 - abar') / (1 - abar)) sqrt(1 - abar / abar'); eta 0 is deterministic, eta 1 the posterior's
    own noise (the strided DDPM step)."""

    process: DDPM
    times: list[float]
    eta: float = 0.0

    def step(
        self, denoise: Denoise, x: torch.Tensor, i: int, gens: list[torch.Generator]
    ) -> tuple[torch.Tensor, torch.Tensor]:
        t, t_next = self.times[i], self.times[i + 1]
        est = denoise(x, t)
        eps = clipped_eps(self.process, x, est, t)
        x0 = self.process.preview(x, eps, t)
        abar, abar_next = self.process.abar(t), self.process.abar(t_next)
        s = self.eta * math.sqrt((1 - abar_next) / (1 - abar) * (1 - abar / abar_next))
        out = math.sqrt(abar_next) * x0 + math.sqrt(max(1 - abar_next - s * s, 0.0)) * eps
        if s > 0:
            out = out + s * randn_like_per_sample(x, gens)
        return out, est


DIFFUSERS: dict[str, tuple[type[Any], dict[str, Any]]] = {
    "dpmpp_2m": (DPMSolverMultistepScheduler, {"algorithm_type": "dpmsolver++", "solver_order": 2}),
    "dpmpp_sde": (DPMSolverMultistepScheduler, {"algorithm_type": "sde-dpmsolver++", "solver_order": 2}),
    "unipc": (UniPCMultistepScheduler, {"solver_order": 2, "solver_type": "bh2"}),
    "euler": (EulerDiscreteScheduler, {"use_karras_sigmas": True}),
    "heun": (HeunDiscreteScheduler, {"use_karras_sigmas": True}),
}
VE_STATE = {"euler", "heun"}  # their state is x_t / sqrt(abar_t), k-diffusion's x = x0 + sigma eps
NOISE_ARG = {"dpmpp_sde"}  # steps that draw noise: ours is passed in (one generator per sample)


def diffusers_scheduler(sampler: str, process: DDPM, steps: int, spacing: str | None) -> Any:
    """The scheduler on our betas. Karras sigmas (euler, heun) span the whole schedule: no spacing is given them
    (diffusers' default, linspace, keeps sigma_min the schedule's own)."""
    cls, options = DIFFUSERS[sampler]
    betas = process.schedule.betas.double().numpy()
    spaced_by = {} if spacing is None else {"timestep_spacing": spacing}
    scheduler: Any = cls(
        num_train_timesteps=process.schedule.num_timesteps, trained_betas=betas, **spaced_by, **options
    )
    if cls is DPMSolverMultistepScheduler:
        assert spacing is not None, "DPM-Solver++ visits spaced timesteps"
        scheduler.set_timesteps(timesteps=spaced(process.schedule.num_timesteps, steps, spacing))
    else:
        scheduler.set_timesteps(steps)
        if cls is UniPCMultistepScheduler and scheduler.timesteps[-1] < 0:
            _drop_negative_timestep(scheduler)  # spaced()'s note: "trailing" overshot
    return scheduler


def _drop_negative_timestep(scheduler: Any) -> None:
    """The schedule UniPCMultistepScheduler.set_timesteps builds, less the timestep -1 its "trailing" arange added
    (and that timestep's sigma; the final sigma 0 stays)."""
    scheduler.timesteps = scheduler.timesteps[:-1]
    scheduler.sigmas = torch.cat([scheduler.sigmas[:-2], scheduler.sigmas[-1:]])
    scheduler.num_inference_steps = len(scheduler.timesteps)


@dataclass
class Wrapped:
    """A diffusers scheduler behind the loop's step. Our state is x_t; Euler's and Heun's is x_t sqrt(1 + sigma^2)
    (x0 + sigma eps), converted on the way in and out. Heun's schedule repeats every inner time (its first-order step
    and its correction are two `step` calls): one of our steps is both, two network calls, and the last step (to
    sigma 0) is Euler's alone."""

    process: DDPM
    sampler: str
    scheduler: Any
    times: list[float] = field(init=False)
    _sigmas: list[float] = field(init=False)
    _begun: bool = False

    def __post_init__(self) -> None:
        stride = 2 if self.sampler == "heun" else 1
        self.times = [*(float(t) for t in self.scheduler.timesteps[::stride]), float(CLEAN)]
        sigmas = self.scheduler.sigmas.tolist()
        self._sigmas = sigmas[:1] + sigmas[1::2] if self.sampler == "heun" else sigmas

    def step(
        self, denoise: Denoise, x: torch.Tensor, i: int, gens: list[torch.Generator]
    ) -> tuple[torch.Tensor, torch.Tensor]:
        if not self._begun:
            self.scheduler.set_begin_index(2 * i if self.sampler == "heun" else i)
            self._begun = True
        t = self.times[i]
        est = denoise(x, t)
        eps = clipped_eps(self.process, x, est, t)
        index = self.scheduler.step_index
        timestep = self.scheduler.timesteps[self.scheduler.begin_index if index is None else index]
        if self.sampler not in VE_STATE:
            noise = {"variance_noise": randn_like_per_sample(x, gens)} if self.sampler in NOISE_ARG else {}
            return self.scheduler.step(eps, timestep, x, **noise).prev_sample, est
        sigma, sigma_next = self._sigmas[i], self._sigmas[i + 1]
        state = x * math.sqrt(1 + sigma**2)
        self.scheduler.scale_model_input(state, timestep)  # gives x back; diffusers' Euler warns unless it is called
        state = self.scheduler.step(eps, timestep, state).prev_sample
        if self.sampler == "heun" and sigma_next > 0:  # the correction, from the estimate at the next time
            t_next, x_next = self.times[i + 1], state / math.sqrt(1 + sigma_next**2)
            eps2 = clipped_eps(self.process, x_next, denoise(x_next, t_next), t_next)
            state = self.scheduler.step(eps2, self.scheduler.timesteps[self.scheduler.step_index], state).prev_sample
        return state / math.sqrt(1 + sigma_next**2), est


@dataclass
class FlowSolver:
    """Velocity ODE dx/dt = u(x, t) from t = 0 (noise) to 1 (data), written here: "heun" (explicit trapezoid),
    "midpoint" (both second order, two calls a step) and "ab2" (variable-step Adams-Bashforth 2: one call a step, the
    previous velocity remembered; its first step is Euler's)."""

    process: Flow
    times: list[float]
    method: str
    _previous: tuple[float, torch.Tensor] | None = None  # ab2: (the last step's h, its velocity)

    def velocity(self, denoise: Denoise, x: torch.Tensor, t: float) -> tuple[torch.Tensor, torch.Tensor]:
        est = denoise(x, t)
        if self.process.clip is not None and t < 1:
            return (clamp(self.process.preview(x, est, t), self.process.clip) - x) / (1 - t), est
        return est, est

    def step(
        self, denoise: Denoise, x: torch.Tensor, i: int, gens: list[torch.Generator]
    ) -> tuple[torch.Tensor, torch.Tensor]:
        t, t_next = self.times[i], self.times[i + 1]
        h = t_next - t
        u, est = self.velocity(denoise, x, t)
        if self.method == "heun":
            u2, _ = self.velocity(denoise, x + h * u, t_next)
            return x + h / 2 * (u + u2), est
        if self.method == "midpoint":
            u2, _ = self.velocity(denoise, x + h / 2 * u, t + h / 2)
            return x + h * u2, est
        previous, self._previous = self._previous, (h, u)
        if previous is None:
            return x + h * u, est
        h_prev, u_prev = previous
        r = h / (2 * h_prev)
        return x + h * ((1 + r) * u - r * u_prev), est


NATIVE = {"ddpm", "euler"}  # the process's own step: "ddpm" on an eps model, "euler" on a flow


def make_solver(
    process: NoiseProcess,
    sampler: str | None = None,
    steps: int | None = None,
    stride: int | None = None,
    eta: float | None = None,
    spacing: str | None = None,
) -> Solver:
    """The solver of one run. None: the process's own step over `process.times(steps, stride)` (as before solvers
    were a choice). The requests' rules (core/kinds/base.py, `check_sampler`) keep the combinations valid."""
    if isinstance(process, Flow):
        times = process.times(steps)
        if sampler in (None, "euler"):
            return Native(process, times)
        return FlowSolver(process, times, str(sampler))
    assert isinstance(process, DDPM), f"no solvers for {type(process).__name__}"
    T = process.schedule.num_timesteps
    if sampler in (None, "ddpm"):
        if spacing is None or steps is None:
            return Native(process, process.times(steps, stride))
        return Native(process, [float(t) for t in spaced(T, steps, spacing)] + [float(CLEAN)])
    count = steps or 50
    if sampler == "ddim":
        times = [float(t) for t in spaced(T, count, spacing or "trailing")] + [float(CLEAN)]
        return DDIM(process, times, eta or 0.0)
    spacing = None if sampler in VE_STATE else spacing or "trailing"
    return Wrapped(process, sampler, diffusers_scheduler(sampler, process, count, spacing))
