"""The kinds that run the sampling loop: iterative denoising, sampling, SDEdit, inpainting, anagrams, hybrids.

Each is a start, a guidance rule and a constraint around `models.sampling.sample_loop` (DESIGN.md).
"""

from typing import Any

import torch

from models.figures import is_frame
from models.grid import make_grid
from models.guidance import CFG, Anagram, Guide, Hybrid, Interval, Rule
from models.imageio import encode_gif
from models.processes import NoiseProcess
from models.sampling import Inpaint, OnStep, Step, generators, sample_loop, start
from models.views import VIEWS
from service.schemas.jobs import (
    AnagramJob,
    Conditioned,
    DenoiseJob,
    Guidance,
    HybridJob,
    Img2ImgJob,
    InpaintJob,
    SampleJob,
)
from worker.kinds import JobContext, save_denoised

INPAINT_STREAM = 1_000_003  # the known pixels' noise comes from other generators than the samples'


def scale_of(req: Guidance) -> float:
    return req.guidance_scale if req.guidance_scale is not None else 1.0  # admission fills in the model's default


def guided(req: Guidance, rule: Rule, process: NoiseProcess) -> Guide:
    """`rule`, applied only within the job's `guidance_interval` (noise levels of `process`) where it has one."""
    if req.guidance_interval is None:
        return rule
    lo, hi = req.guidance_interval
    return Interval(rule, process.sigma, lo, hi)


def cfg_for(ctx: JobContext, req: Conditioned, n: int, process: NoiseProcess | None = None) -> Guide:
    """CFG on the requested prompt or class; unconditional (one branch) when there is none."""
    model = ctx.model
    cond = model.condition(req.prompt, req.class_label, n)
    if req.prompt is None and req.class_label is None:
        return CFG(cond, None)
    rule = CFG(cond, model.condition(None, None, n), scale_of(req))
    return guided(req, rule, process or model.process)


def reporter(
    ctx: JobContext, stage: str, done: int = 0, total: int | None = None, frames: list[torch.Tensor] | None = None
) -> OnStep:
    """Progress (and GIF frames: the first step, every 20th, and the last 8) from the loop's steps."""

    def on_step(step: Step) -> None:
        if frames is not None and is_frame(step.index, step.total):
            frames.append(make_grid(ctx.to_unit(step.x).clamp(0, 1)))
        ctx.hook(stage, done + step.index, total or step.total)

    return on_step


def shape(ctx: JobContext, n: int) -> torch.Tensor:
    spec = ctx.model.spec
    return torch.empty(n, spec.channels, spec.image_size, spec.image_size, device=ctx.model.device)


def generate(
    ctx: JobContext,
    guide: Guide,
    n: int,
    seed: int,
    steps: int | None,
    stride: int | None,
    frames: bool = False,
    stage: str = "sampling",
    constrain: Inpaint | None = None,
) -> torch.Tensor:
    """n samples from pure noise; saves image_{i}.png, grid.png (and frames.gif); returns them in [0, 1]."""
    model = ctx.model
    times = model.process.times(steps, stride)
    gens = generators(seed, n)
    recorded: list[torch.Tensor] | None = [] if frames else None
    x = start(model.process, times, 0, gens, shape(ctx, n))
    out = sample_loop(
        model.process, model.predict, guide, x, times, gens, constrain, reporter(ctx, stage, frames=recorded)
    )
    images = ctx.to_unit(out).clamp(0, 1)
    ctx.outputs.save_images(images)
    if recorded:
        ctx.outputs.save("frames.gif", encode_gif(recorded, duration_ms=80), "image/gif")
    return images


def run_sample(req: SampleJob, ctx: JobContext) -> dict[str, Any]:
    assert req.seed is not None
    generate(ctx, cfg_for(ctx, req, req.n), req.n, req.seed, req.steps, req.stride, frames=req.frames)
    return {"seeds": [req.seed + i for i in range(req.n)], **ctx.notes}


def run_img2img(req: Img2ImgJob, ctx: JobContext) -> dict[str, Any]:
    """SDEdit: for each i_start, the image noised to times[i_start] and denoised from there; one output each."""
    assert req.seed is not None
    model = ctx.model
    x0 = ctx.image(req.image, native=True)
    times = model.process.times(req.steps, req.stride)
    guide = cfg_for(ctx, req, 1)
    total = sum(len(times) - 1 - i for i in req.starts)
    done, outputs = 0, []
    for k, i_start in enumerate(req.starts):
        gens = generators(req.seed, 1, offset=k)
        x = start(model.process, times, i_start, gens, x0, image=x0)
        out = sample_loop(
            model.process,
            model.predict,
            guide,
            x,
            times[i_start:],
            gens,
            on_step=reporter(ctx, "sampling", done, total),
        )
        done += len(times) - 1 - i_start
        outputs.append(ctx.to_unit(out).clamp(0, 1))
        ctx.outputs.save_png(f"image_{k}.png", outputs[-1][0])
    if len(outputs) > 1:
        ctx.outputs.save_png("grid.png", make_grid(torch.cat(outputs), nrow=len(outputs)))
    return {"seed": req.seed, "i_start": req.starts, "t_start": [times[i] for i in req.starts], **ctx.notes}


def run_iterative(req: DenoiseJob, ctx: JobContext) -> dict[str, Any]:
    """Iterative denoising (CS180 A 1.4): SDEdit of the image noised to times[i_start], on the job's prompt (if any)
    without guidance."""
    assert req.seed is not None
    model = ctx.model
    x0 = ctx.image(req.image, native=True)
    times = model.process.times(req.steps, req.stride)
    i_start = req.i_start if req.i_start is not None else 10
    gens = generators(req.seed, 1)
    noisy = start(model.process, times, i_start, gens, x0, image=x0)
    out = sample_loop(
        model.process,
        model.predict,
        CFG(model.condition(req.prompt, None, 1), None),  # conditioned, unguided, as the course's 1.4
        noisy,
        times[i_start:],
        gens,
        on_step=reporter(ctx, "denoising"),
    )
    save_denoised(ctx, noisy, out)
    return {"seed": req.seed, "i_start": i_start, "t_start": times[i_start], **ctx.notes}


def run_inpaint(req: InpaintJob, ctx: JobContext) -> dict[str, Any]:
    assert req.seed is not None
    x0 = ctx.image(req.image, native=True)
    mask_image = ctx.image(req.mask, native=True, name="mask")
    lo, hi = ctx.model.spec.value_range
    mask = ((mask_image - lo) / (hi - lo)).mean(1, keepdim=True).gt(0.5).float()  # (1, 1, H, W) 1 = regenerate
    original = x0.expand(req.n, -1, -1, -1)
    constrain = Inpaint(
        ctx.model.process, original, mask.expand(req.n, -1, -1, -1), generators(req.seed, req.n, offset=INPAINT_STREAM)
    )
    generate(
        ctx, cfg_for(ctx, req, req.n), req.n, req.seed, req.steps, req.stride, stage="inpainting", constrain=constrain
    )
    return {"seeds": [req.seed + i for i in range(req.n)], "masked_fraction": round(float(mask.mean()), 4), **ctx.notes}


def run_anagram(req: AnagramJob, ctx: JobContext) -> dict[str, Any]:
    assert req.seed is not None
    model = ctx.model
    upright, viewed = (model.condition(p, None, req.n) for p in req.prompts)
    view = VIEWS[req.view]
    uncond = model.condition(None, None, req.n)
    guide = guided(req, Anagram(upright, viewed, uncond, view, scale_of(req)), model.process)
    images = generate(ctx, guide, req.n, req.seed, req.steps, req.stride)
    for i, image in enumerate(images):
        ctx.outputs.save_png(f"view_{i}.png", view.view(image))  # the second reading, as the eye sees it turned
    return {"seeds": [req.seed + i for i in range(req.n)], "view": req.view}


def run_hybrid(req: HybridJob, ctx: JobContext) -> dict[str, Any]:
    assert req.seed is not None
    model = ctx.model
    low, high = (model.condition(p, None, req.n) for p in req.prompts)
    uncond = model.condition(None, None, req.n)
    guide = guided(req, Hybrid(low, high, uncond, req.kernel_size, req.sigma, scale_of(req)), model.process)
    generate(ctx, guide, req.n, req.seed, req.steps, req.stride)
    return {"seeds": [req.seed + i for i in range(req.n)]}
