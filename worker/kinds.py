"""Each job kind as a function of its validated request and the job's context; returns the job's `result`.

Randomness: output i of a job draws its noise from a generator seeded with (seed + i), so an output never depends
on how many others the job asked for.
"""

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

from models.filters import gaussian_blur
from models.forward import ddpm_forward, sigma_forward
from models.grid import make_grid
from service.catalog import ModelSpec
from service.schemas.images import ImageInput
from service.schemas.jobs import DenoiseJob, JobBase, NoiseJob
from service.store import ArtifactStore
from worker.hook import StepHook
from worker.inputs import load_image
from worker.model_cache import ModelCache
from worker.outputs import Outputs


@dataclass
class JobContext:
    spec: ModelSpec
    cache: ModelCache
    store: ArtifactStore
    hook: StepHook
    outputs: Outputs

    def image(self, image: ImageInput) -> torch.Tensor:
        """(1, C, H, W) in the model's value range."""
        lo, hi = self.spec.value_range
        return load_image(image, self.store, self.spec.channels) * (hi - lo) + lo

    def to_unit(self, x: torch.Tensor) -> torch.Tensor:
        """From the model's value range back to [0, 1] (unclipped; PNG encoding clips)."""
        lo, hi = self.spec.value_range
        return (x - lo) / (hi - lo)


def generator(seed: int, i: int) -> torch.Generator:
    return torch.Generator().manual_seed((seed + i) % 2**63)


def add_noise(
    ctx: JobContext, x0: torch.Tensor, timestep: int | None, sigma: float | None, gen: torch.Generator
) -> torch.Tensor:
    """x0 (1, C, H, W) noised by the DDPM forward process at `timestep`, or by z = x + sigma eps; neither: x0."""
    if timestep is None and sigma is None:
        return x0
    noise = torch.randn(x0.shape, generator=gen)
    if timestep is not None:
        abar = ctx.cache.schedule(ctx.spec).alphas_cumprod
        return ddpm_forward(x0, torch.tensor([timestep]), abar, noise)
    return sigma_forward(x0, torch.tensor([float(sigma or 0.0)]), noise)


def run_noise(req: NoiseJob, ctx: JobContext) -> dict[str, Any]:
    assert req.seed is not None
    x0 = ctx.image(req.image)
    levels: list[tuple[int | None, float | None]] = (
        [(t, None) for t in req.timesteps] if req.timesteps is not None else [(None, s) for s in req.sigmas or []]
    )
    noisy = []
    for i, (t, s) in enumerate(levels):
        x = ctx.to_unit(add_noise(ctx, x0, t, s, generator(req.seed, i)))
        ctx.outputs.save_png(f"image_{i}.png", x[0])  # saved at once: a canceled job keeps what it made
        noisy.append(x)
        ctx.hook("noising", i + 1, len(levels))
    if len(noisy) > 1:
        ctx.outputs.save_png("grid.png", make_grid(torch.cat(noisy)))
    return {"seed": req.seed, "size": list(x0.shape[-2:]), "value_range": list(ctx.spec.value_range)}


def run_denoise(req: DenoiseJob, ctx: JobContext) -> dict[str, Any]:
    assert req.seed is not None and req.blur_sigma is not None
    x0 = ctx.image(req.image)
    noisy = add_noise(ctx, x0, req.timestep, req.sigma, generator(req.seed, 0))
    ctx.hook("noising", 1, 2)
    denoised = gaussian_blur(noisy, req.kernel_size, req.blur_sigma)
    ctx.hook("denoising", 2, 2)
    ctx.outputs.save_png("noisy.png", ctx.to_unit(noisy)[0])
    ctx.outputs.save_images(ctx.to_unit(denoised))
    ctx.outputs.save_png("grid.png", make_grid(ctx.to_unit(torch.cat([noisy, denoised])), nrow=2))
    return {"seed": req.seed, "size": list(x0.shape[-2:]), "blur_sigma": req.blur_sigma}


KINDS: dict[str, Callable[[Any, JobContext], dict[str, Any]]] = {"noise": run_noise, "denoise": run_denoise}


def run_kind(req: JobBase, ctx: JobContext) -> dict[str, Any]:
    return KINDS[str(req.kind)](req, ctx)
