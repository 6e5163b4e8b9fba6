"""The job context, and the kinds that need no sampling loop: `noise` and `denoise` (blur, one step).

Randomness: output i of a job draws its noise from a generator seeded with (seed + i), so an output never depends
on how many others the job asked for.
"""

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch

from core.schemas.images import ImageInput
from core.schemas.jobs import DenoiseJob, NoiseJob
from core.store import ArtifactStore
from models.filters import gaussian_blur
from models.forward import sigma_forward
from models.grid import make_grid
from models.imageio import resize
from models.sampling import generators
from worker.hook import StepHook
from worker.inputs import load_image
from worker.model_cache import Servable
from worker.outputs import Outputs


@dataclass
class JobContext:
    model: Servable
    store: ArtifactStore
    hook: StepHook
    outputs: Outputs
    notes: dict[str, Any] = field(default_factory=dict)  # goes into the job's result

    def image(self, image: ImageInput, native: bool = False, name: str = "image") -> torch.Tensor:
        """(1, C, H, W) in the model's value range; `native`: resized to the model's size (noted in the result)."""
        spec = self.model.spec
        x = load_image(image, self.store, spec.channels)
        if native and x.shape[-2:] != (spec.image_size, spec.image_size):
            self.notes[f"{name}_resized_from"] = list(x.shape[-2:])
            x = resize(x, (spec.image_size, spec.image_size)).clamp(0, 1)
        lo, hi = spec.value_range
        return (x * (hi - lo) + lo).to(self.model.device)

    def to_unit(self, x: torch.Tensor) -> torch.Tensor:
        """From the model's value range back to [0, 1] (unclipped; PNG encoding clips)."""
        lo, hi = self.model.spec.value_range
        return (x.float().cpu() - lo) / (hi - lo)


def add_noise(
    ctx: JobContext, x0: torch.Tensor, timestep: float | None, sigma: float | None, seed: int, i: int = 0
) -> torch.Tensor:
    """x0 (1, C, H, W) noised by the model's forward process at `timestep`, or by z = x + sigma eps; neither: x0."""
    if timestep is None and sigma is None:
        return x0
    noise = torch.randn(x0.shape, generator=generators(seed, 1, offset=i)[0]).to(x0.device)
    if timestep is not None:
        return ctx.model.process.noise_to(x0, timestep, noise)
    return sigma_forward(x0, torch.tensor([float(sigma or 0.0)], device=x0.device), noise)


def run_noise(req: NoiseJob, ctx: JobContext) -> dict[str, Any]:
    assert req.seed is not None
    x0 = ctx.image(req.image)
    levels: list[tuple[int | None, float | None]] = (
        [(t, None) for t in req.timesteps] if req.timesteps is not None else [(None, s) for s in req.sigmas or []]
    )
    noisy = []
    for i, (t, s) in enumerate(levels):
        x = ctx.to_unit(add_noise(ctx, x0, t, s, req.seed, i))
        ctx.outputs.save_png(f"image_{i}.png", x[0])  # saved at once: a canceled job keeps what it made
        noisy.append(x)
        ctx.hook("noising", i + 1, len(levels))
    if len(noisy) > 1:
        ctx.outputs.save_png("grid.png", make_grid(torch.cat(noisy)))
    return {"seed": req.seed, "size": list(x0.shape[-2:]), "value_range": list(ctx.model.spec.value_range)}


def save_denoised(ctx: JobContext, noisy: torch.Tensor, denoised: torch.Tensor) -> None:
    ctx.outputs.save_png("noisy.png", ctx.to_unit(noisy)[0])
    ctx.outputs.save_images(ctx.to_unit(denoised))
    ctx.outputs.save_png("grid.png", make_grid(ctx.to_unit(torch.cat([noisy, denoised])), nrow=2))


def run_blur(req: DenoiseJob, ctx: JobContext) -> dict[str, Any]:
    assert req.seed is not None and req.blur_sigma is not None
    x0 = ctx.image(req.image)
    noisy = add_noise(ctx, x0, req.timestep, req.sigma, req.seed)
    ctx.hook("noising", 1, 2)
    denoised = gaussian_blur(noisy, req.kernel_size, req.blur_sigma)
    ctx.hook("denoising", 2, 2)
    save_denoised(ctx, noisy, denoised)
    return {"seed": req.seed, "size": list(x0.shape[-2:]), "blur_sigma": req.blur_sigma}


def run_one_step(req: DenoiseJob, ctx: JobContext) -> dict[str, Any]:
    """The clean image in one network call (CS180 A 1.3, B 1.2): the denoiser's output, or x0 from eps or u."""
    assert req.seed is not None
    model = ctx.model
    x0 = ctx.image(req.image, native=True)
    if not model.spec.is_denoiser:  # a diffusion model: noise to a time of its process
        t = (
            float(req.timestep)
            if req.timestep is not None
            else model.process.times(req.steps, req.stride)[req.i_start or 0]
        )
        noisy = add_noise(ctx, x0, t, None, req.seed)
        t_model = torch.full((1,), model.process.model_time(t), device=x0.device)
        est = model.predict(noisy, t_model, model.condition(req.prompt, None, 1))
        denoised = model.process.preview(noisy, est, t)
    else:  # the single-step denoiser: z = x + sigma eps in, x out
        noisy = add_noise(ctx, x0, None, req.sigma, req.seed)
        denoised = model.predict(noisy, torch.zeros(1, device=x0.device), model.condition(None, None, 1))
    ctx.hook("denoising", 1, 1)
    save_denoised(ctx, noisy, denoised)
    return {"seed": req.seed, **ctx.notes}


Kind = Callable[[Any, JobContext], dict[str, Any]]
