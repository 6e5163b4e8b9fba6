"""Distillation of a teacher into a few-step student with the teacher's guidance baked in (docs/training.md,
"Distillation").

- reflow (Liu et al. 2022, "Flow straight and fast", rectified flow): pairs (z, x1), x1 the teacher's ODE solution
  from the noise z (Euler at the teacher's steps, CFG at its scale for a class, unguided for the unconditional
  rows). The student, started from the teacher's weights, learns the straight lines between them:
  x_t = (1 - t) z + t x1, loss ||u(x_t, t, c) - (x1 - z)||^2: the flow loss of models/training.py with the pair's
  noise in place of a fresh draw. Straight paths are what one or two Euler steps integrate exactly.
- progressive (Salimans & Ho 2022, "Progressive distillation for fast sampling of diffusion models"; guidance baked
  in as Meng et al. 2023, "On distillation of guided diffusion models"): rounds that halve the step count. In each,
  the student's one DDIM step (eta 0) from a time of its grid is trained to land where two DDIM steps of the teacher
  land (the teacher of the first round guided by CFG on class rows; each later round's teacher the previous round's
  student). The grid of N steps is the timesteps diffusers' DDIMScheduler visits with "trailing" spacing, then the
  clean image (abar = 1), so the student is sampled with the service's "ddim" sampler exactly as it was trained.

Pure math: no Redis, no job. The worker's orchestration is worker/trainer.py.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from diffusers import DDIMScheduler
from torch import Tensor

from models.guidance import CFG, Predict
from models.predictors import UNCONDITIONAL
from models.processes import CLEAN, Flow
from models.sampling import OnStep, generators, sample_loop
from models.solvers import make_solver

Progress = Callable[[int, int], None]  # (steps done, total): pair generation's own stage


@dataclass(frozen=True)
class Pairs:
    """Reflow's training set: the teacher's solution `images` from the noise `noise`, under `labels`."""

    noise: Tensor  # (N, C, H, W) z, the start of each line
    images: Tensor  # (N, C, H, W) x1, the teacher's solution from z
    labels: Tensor  # (N,) the class of each pair; UNCONDITIONAL for the unguided ones


def pair_labels(n: int, num_classes: int, p_uncond: float) -> Tensor:
    """(n,) the classes 0, 1, ..., K-1, 0, ... for the first rows and UNCONDITIONAL for the last round(p_uncond n)
    (all of them without classes): the unguided rows last, so a batch of the teacher is guided or not as a whole."""
    uncond = n if num_classes == 0 else round(p_uncond * n)
    classes = torch.arange(n - uncond) % max(num_classes, 1)
    return torch.cat([classes, torch.full((uncond,), UNCONDITIONAL)])


def pair_noise(n: int, shape: Sequence[int], seed: int) -> Tensor:
    """(n, *shape): pair i's z drawn from seed + i alone, so a resumed run draws the same z without the teacher."""
    return torch.stack([torch.randn(tuple(shape), generator=g) for g in generators(seed, n)])


def teacher_solve(
    predict: Predict,
    z: Tensor,
    labels: Tensor,
    steps: int,
    guidance: float,
    gens: list[torch.Generator],
    on_step: OnStep | None = None,
) -> Tensor:
    """x1 from z (B, C, H, W) through the flow teacher's ODE: Euler over `steps` with CFG at `guidance` for the class
    rows, unguided where every row is UNCONDITIONAL. The one place distillation drives the sampling loop."""
    solver = make_solver(Flow(default_steps=steps), "euler", steps=steps)
    guided = bool((labels != UNCONDITIONAL).any())
    guide = CFG(labels, torch.full_like(labels, UNCONDITIONAL) if guided else None, guidance)
    return sample_loop(solver, predict, guide, z, gens, on_step=on_step)


@torch.inference_mode()
def reflow_pairs(
    predict: Predict,
    noise: Tensor,
    labels: Tensor,
    steps: int,
    guidance: float,
    batch: int,
    on_progress: Progress | None = None,
) -> Pairs:
    """The teacher's solution from each z of `noise` (N, C, H, W) under `labels` (N,), `batch` rows at a time, on
    `predict`'s device (noise and labels on it); what comes back is on the CPU."""
    n = len(noise)
    chunks = [(lo, min(n, lo + batch)) for lo in range(0, n, batch)]
    # a chunk never mixes guided and unguided rows (pair_labels puts the unguided last): split at the boundary
    first_uncond = int((labels != UNCONDITIONAL).sum())
    if 0 < first_uncond < n:
        chunks = [(a, b) for lo, hi in chunks for a, b in _split_at(lo, hi, first_uncond)]
    total, done = len(chunks) * steps, 0
    out = []
    for lo, hi in chunks:

        def on_step(step: object, base: int = done) -> None:
            if on_progress is not None:
                on_progress(base + getattr(step, "index", 0), total)

        x1 = teacher_solve(predict, noise[lo:hi], labels[lo:hi], steps, guidance, generators(0, hi - lo), on_step)
        out.append(x1.float().cpu())
        done += steps
    return Pairs(noise.cpu(), torch.cat(out), labels.cpu())


def _split_at(lo: int, hi: int, at: int) -> list[tuple[int, int]]:
    return [(lo, at), (at, hi)] if lo < at < hi else [(lo, hi)]


def reflow_target(z: Tensor, x1: Tensor) -> Tensor:
    """The velocity of the straight line from z to x1, the same at every t: u = x1 - z."""
    return x1 - z


def straight(z: Tensor, x1: Tensor, t: Tensor) -> Tensor:
    """x_t = (1 - t) z + t x1, t (B,)."""
    tt = t.view(-1, *([1] * (z.ndim - 1)))  # (B, 1, 1, 1)
    return (1 - tt) * z + tt * x1


# ---------------------------------------------------------------------------------------------------------------------
# Progressive distillation (eps models)


def trailing_timesteps(betas: Tensor, steps: int) -> list[int]:
    """The timesteps the service's "ddim" sampler visits in `steps` steps with spacing "trailing", noisiest first:
    diffusers' own DDIMScheduler asked, so the student's grid is the sampler's by construction."""
    scheduler: Any = DDIMScheduler(
        num_train_timesteps=len(betas),
        trained_betas=betas.double().numpy(),
        set_alpha_to_one=True,
        timestep_spacing="trailing",
    )
    scheduler.set_timesteps(steps)
    return [int(t) for t in scheduler.timesteps]


def grid(betas: Tensor, steps: int) -> list[int]:
    """The student's times: the trailing timesteps, then CLEAN (abar = 1), the end of its last step."""
    return [*trailing_timesteps(betas, steps), CLEAN]


def abar_at(alphas_cumprod: Tensor, t: Tensor) -> Tensor:
    """(B,) abar at timesteps t (B,) long, 1 where t is CLEAN."""
    clean = t == CLEAN
    return torch.where(clean, torch.ones_like(t, dtype=alphas_cumprod.dtype), alphas_cumprod[t.clamp(min=0)])


def _col(v: Tensor) -> Tensor:
    return v.view(-1, 1, 1, 1)


def ddim_step(x: Tensor, eps: Tensor, abar: Tensor, abar_next: Tensor) -> Tensor:
    """One DDIM step, eta 0 (Song et al. 2021, eq. 12): x0 = (x - sqrt(1 - abar) eps) / sqrt(abar), then
    x' = sqrt(abar') x0 + sqrt(1 - abar') eps. abar, abar_next (B,)."""
    a, a_next = _col(abar), _col(abar_next)
    x0 = (x - (1 - a).sqrt() * eps) / a.sqrt()
    return a_next.sqrt() * x0 + (1 - a_next).sqrt() * eps


def progressive_target(x: Tensor, x_far: Tensor, abar: Tensor, abar_far: Tensor) -> Tensor:
    """The noise estimate whose one DDIM step from x (at abar) lands on x_far (at abar_far), where the teacher's two
    steps landed (Salimans & Ho 2022, algorithm 2: x~ = (z'' - sigma''/sigma z) / (alpha'' - sigma''/sigma alpha),
    then eps~ = (z - alpha x~) / sigma). abar, abar_far (B,), abar < abar_far <= 1."""
    alpha, sigma = _col(abar).sqrt(), (1 - _col(abar)).sqrt()
    alpha_far, sigma_far = _col(abar_far).sqrt(), (1 - _col(abar_far)).sqrt()
    ratio = sigma_far / sigma
    x0 = (x_far - ratio * x) / (alpha_far - ratio * alpha)
    return (x - alpha * x0) / sigma


def truncated_snr_weight(abar: Tensor) -> Tensor:
    """(B,) max(1, 1 / SNR): Salimans & Ho's "truncated SNR" weighting of the clean-image loss in noise terms,
    max(SNR, 1) ||x - x^||^2 = max(SNR, 1) / SNR ||eps - eps^||^2 (SNR = abar / (1 - abar))."""
    return ((1 - abar) / abar).clamp(min=1.0)


EpsModel = Callable[[Tensor, Tensor, Tensor | None, Tensor | None], Tensor]  # (x, t / T, c, c_mask) -> eps


@torch.no_grad()
def teacher_two_steps(
    teacher: EpsModel,
    x: Tensor,
    t: Tensor,
    t_mid: Tensor,
    t_far: Tensor,
    alphas_cumprod: Tensor,
    c: Tensor | None,
    c_mask: Tensor | None,
    guidance: float,
    num_timesteps: int,
) -> Tensor:
    """Where two DDIM steps of the teacher take x (B, C, H, W): t -> t_mid -> t_far, each (B,) long. CFG at
    `guidance` on the rows whose c_mask is 1 (its unconditional branch: c_mask 0); None: unconditional."""

    def eps(x_: Tensor, t_: Tensor) -> Tensor:
        time = t_.to(x_.dtype) / num_timesteps
        if c is None or c_mask is None or guidance == 1.0:
            return teacher(x_, time, c, c_mask)
        both = teacher(torch.cat([x_, x_]), torch.cat([time, time]), torch.cat([c, c]), torch.cat([c_mask, 0 * c_mask]))
        cond, uncond = both.chunk(2)
        guided = uncond + guidance * (cond - uncond)
        return torch.where(_col(c_mask) > 0, guided, cond)

    a, a_mid, a_far = (abar_at(alphas_cumprod, s) for s in (t, t_mid, t_far))
    x_mid = ddim_step(x, eps(x, t), a, a_mid)
    return ddim_step(x_mid, eps(x_mid, t_mid), a_mid, a_far)


def rounds(teacher_steps: int, steps: int) -> int:
    """How many halvings take teacher_steps to steps (teacher_steps = steps 2^k, k >= 1)."""
    k = round(math.log2(teacher_steps / steps))
    if k < 1 or steps * 2**k != teacher_steps:
        raise ValueError(f"teacher_steps must be steps times a power of two >= 2, got {teacher_steps} and {steps}")
    return k


@dataclass(frozen=True)
class Round:
    """One round of progressive distillation: the student learns in one step of `times` what `teacher` does in two
    of `teacher_times` (the student's grid refined once: teacher_times[2 i] == times[i])."""

    teacher: EpsModel
    times: Tensor  # (N + 1,) long: the student's grid, CLEAN last
    teacher_times: Tensor  # (2 N + 1,) long
    guidance: float  # CFG of the teacher on class rows (1: none, as a distilled teacher has it baked in)

    @classmethod
    def of(cls, teacher: EpsModel, betas: Tensor, steps: int, guidance: float) -> Round:
        times, fine = grid(betas, steps), grid(betas, 2 * steps)
        if fine[::2] != times:  # trailing grids of N and 2N nest (T / 2N divides T / N); checked, not assumed
            raise ValueError(f"the {2 * steps}-step grid does not refine the {steps}-step one: {fine} vs {times}")
        return cls(teacher, torch.tensor(times), torch.tensor(fine), guidance)

    @property
    def steps(self) -> int:
        return len(self.times) - 1

    def batch(
        self,
        x: Tensor,
        noise: Tensor,
        i: Tensor,
        c: Tensor | None,
        c_mask: Tensor | None,
        alphas_cumprod: Tensor,
    ) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """(x_t, t, the target noise, its weight) of clean images x (B, C, H, W) noised with `noise` to step i (B,)
        of the student's grid: x_t = sqrt(abar_t) x + sqrt(1 - abar_t) eps."""
        dev = x.device
        t, t_mid, t_far = (
            s.to(dev)[j] for s, j in ((self.times, i), (self.teacher_times, 2 * i + 1), (self.times, i + 1))
        )
        abar, abar_far = abar_at(alphas_cumprod, t), abar_at(alphas_cumprod, t_far)
        x_t = _col(abar).sqrt() * x + (1 - _col(abar)).sqrt() * noise
        T = len(alphas_cumprod)
        x_far = teacher_two_steps(self.teacher, x_t, t, t_mid, t_far, alphas_cumprod, c, c_mask, self.guidance, T)
        return x_t, t, progressive_target(x_t, x_far, abar, abar_far), truncated_snr_weight(abar)
