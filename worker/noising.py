"""The kinds that need no sampling loop: `noise` and `denoise` (blur, one step).

Randomness: output i of a job draws its noise from a generator seeded with (seed + i), so an output never depends
on how many others the job asked for.
"""

from typing import Any

import torch

from core.kinds.base import Admitted
from core.kinds.denoise import DenoiseJob
from core.kinds.noise import NoiseJob
from models.filters import gaussian_blur
from models.forward import sigma_forward
from models.grid import make_grid
from models.sampling import generators
from worker.job_context import JobContext


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


def run_noise(admitted: Admitted[NoiseJob], ctx: JobContext) -> dict[str, Any]:
    req, seed = admitted.req, admitted.seed
    x0 = ctx.image(req.image)
    levels: list[tuple[int | None, float | None]] = (
        [(t, None) for t in req.timesteps] if req.timesteps is not None else [(None, s) for s in req.sigmas or []]
    )
    noisy = []
    for i, (t, s) in enumerate(levels):
        x = ctx.to_unit(add_noise(ctx, x0, t, s, seed, i))
        ctx.outputs.save_png(f"image_{i}.png", x[0])  # saved at once: a canceled job keeps what it made
        noisy.append(x)
        ctx.hook("noising", i + 1, len(levels))
    if len(noisy) > 1:
        ctx.outputs.save_png("grid.png", make_grid(torch.cat(noisy)))
    return {"seed": seed, "size": list(x0.shape[-2:]), "value_range": list(ctx.model.spec.value_range)}


def save_denoised(ctx: JobContext, noisy: torch.Tensor, denoised: torch.Tensor) -> None:
    ctx.outputs.save_png("noisy.png", ctx.to_unit(noisy)[0])
    ctx.outputs.save_images(ctx.to_unit(denoised))
    ctx.outputs.save_png("grid.png", make_grid(ctx.to_unit(torch.cat([noisy, denoised])), nrow=2))


def run_blur(admitted: Admitted[DenoiseJob], ctx: JobContext) -> dict[str, Any]:
    req, seed = admitted.req, admitted.seed
    assert req.blur_sigma is not None
    x0 = ctx.image(req.image)
    noisy = add_noise(ctx, x0, req.timestep, req.sigma, seed)
    ctx.hook("noising", 1, 2)
    denoised = gaussian_blur(noisy, req.kernel_size, req.blur_sigma)
    ctx.hook("denoising", 2, 2)
    save_denoised(ctx, noisy, denoised)
    return {"seed": seed, "size": list(x0.shape[-2:]), "blur_sigma": req.blur_sigma}


def run_one_step(admitted: Admitted[DenoiseJob], ctx: JobContext) -> dict[str, Any]:
    """The clean image in one network call (CS180 A 1.3, B 1.2): the denoiser's output, or x0 from eps or u."""
    req, seed = admitted.req, admitted.seed
    model = ctx.model
    x0 = ctx.image(req.image, native=True)
    if not model.spec.is_denoiser:  # a diffusion model: noise to a time of its process
        t = (
            float(req.timestep)
            if req.timestep is not None
            else model.process.times(req.steps, req.stride)[req.i_start or 0]
        )
        noisy = add_noise(ctx, x0, t, None, seed)
        t_model = torch.full((1,), model.process.model_time(t), device=x0.device)
        est = model.predict(noisy, t_model, model.condition(req.prompt, None, 1))
        denoised = model.process.preview(noisy, est, t)
    else:  # the single-step denoiser: z = x + sigma eps in, x out
        noisy = add_noise(ctx, x0, None, req.sigma, seed)
        denoised = model.predict(noisy, torch.zeros(1, device=x0.device), model.condition(None, None, 1))
    ctx.hook("denoising", 1, 1)
    save_denoised(ctx, noisy, denoised)
    return {"seed": seed, **ctx.notes}
