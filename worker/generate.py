"""The kinds that run the sampling loop: iterative denoising, sampling, SDEdit, inpainting (anagrams and hybrids:
worker/anagram.py, worker/hybrid.py).

Each is a start, a guidance rule and a constraint around `models.sampling.sample_loop` (docs/architecture.md, "The
sampling loop").
"""

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from core.kinds.base import Admitted, Conditioned, Guidance, Stepping
from core.kinds.denoise import DenoiseJob
from core.kinds.img2img import Img2ImgJob
from core.kinds.inpaint import InpaintJob
from core.kinds.sample import SampleJob
from models.figures import is_frame
from models.grid import make_grid
from models.guidance import CFG, Guide, Interval, Rule
from models.imageio import encode_gif
from models.processes import NoiseProcess
from models.sampling import Constrain, Inpaint, OnStep, Step, generators, sample_loop, start
from models.solvers import Solver, make_solver
from worker.hook import ProgressHook
from worker.job_context import JobContext
from worker.model_cache import Servable
from worker.noising import save_denoised
from worker.preview import LazyPreview

INPAINT_STREAM = 1_000_003  # the known pixels' noise comes from other generators than the samples'


def scale_of(req: Guidance) -> float:
    return req.guidance_scale if req.guidance_scale is not None else 1.0  # admission fills in the model's default


def guided(req: Guidance, rule: Rule, process: NoiseProcess) -> Guide:
    """`rule`, applied only within the job's `guidance_interval` (noise levels of `process`) where it has one."""
    if req.guidance_interval is None:
        return rule
    lo, hi = req.guidance_interval
    return Interval(rule, process.sigma, lo, hi)


def cfg_over(model: Servable, jobs: Sequence[tuple[Conditioned, int]], process: NoiseProcess | None = None) -> Guide:
    """CFG for jobs sampled as one batch, each (request, n) on its own prompt or class; the guidance settings (and
    whether there is a condition at all) are the first job's, which a batch shares (worker/batching.py).
    Unconditional (one branch) when there is no condition."""
    first = jobs[0][0]
    cond = torch.cat([model.condition(req.prompt, req.class_label, n) for req, n in jobs])
    if first.prompt is None and first.class_label is None:
        return CFG(cond, None)
    rule = CFG(cond, model.condition(None, None, len(cond)), scale_of(first))
    return guided(first, rule, process or model.process)


def cfg_for(ctx: JobContext, req: Conditioned, n: int, process: NoiseProcess | None = None) -> Guide:
    """CFG on the requested prompt or class; unconditional (one branch) when there is none."""
    return cfg_over(ctx.model, [(req, n)], process)


@dataclass
class Part:
    """One job's share of a sampling loop: n samples from seed + i, saved to the job's own outputs."""

    ctx: JobContext
    n: int
    seed: int
    frames: list[torch.Tensor] | None = None  # GIF frames of its samples, when the job asks for them


def reporter(
    progress: ProgressHook,
    stage: str,
    done: int = 0,
    total: int | None = None,
    parts: Sequence[Part] = (),
    to_unit: Callable[[torch.Tensor], torch.Tensor] | None = None,
) -> OnStep:
    """Progress, previews and each part's GIF frames (the first step, every 20th, and the last 8) from the loop's
    steps. Previews need `to_unit` (the model's range to [0, 1]), the parts' own by default; without it, none."""
    unit = to_unit or (parts[0].ctx.to_unit if parts else None)
    rows, start = {}, 0
    for part in parts:
        rows[part.ctx.hook.job.id] = slice(start, start + part.n)
        start += part.n

    def on_step(step: Step) -> None:
        if is_frame(step.index, step.total) and any(part.frames is not None for part in parts):
            for part, x in zip(parts, step.x.split([p.n for p in parts]), strict=True):
                if part.frames is not None:
                    part.frames.append(make_grid(part.ctx.to_unit(x).clamp(0, 1)))
        preview = None if unit is None else LazyPreview(lambda: unit(step.preview()), rows)
        progress(stage, done + step.index, total or step.total, preview=preview)

    return on_step


def solver_for(model: Servable, req: Stepping) -> Solver:
    """A new solver for one run of the job's loop (a multistep solver remembers its run's steps)."""
    return make_solver(model.process, req.sampler, req.steps, req.stride, req.eta, req.spacing)


def shape(ctx: JobContext, n: int) -> torch.Tensor:
    spec = ctx.model.spec
    return torch.empty(n, spec.channels, spec.image_size, spec.image_size, device=ctx.model.device)


def generate(
    parts: Sequence[Part],
    guide: Guide,
    stepping: Stepping,
    progress: ProgressHook | None = None,
    stage: str = "sampling",
    constrain: Constrain | None = None,
) -> list[torch.Tensor]:
    """The parts' samples from pure noise, in one loop; saves each part's image_{i}.png, grid.png (and frames.gif)
    unless its job was canceled; returns each part's images in [0, 1]. `progress`: the first part's job's hook."""
    ctx = parts[0].ctx
    model = ctx.model
    solver = solver_for(model, stepping)
    gens = [g for part in parts for g in generators(part.seed, part.n)]
    x = start(model.process, solver.times, 0, gens, shape(ctx, len(gens)))
    on_step = reporter(progress or ctx.hook, stage, parts=parts)
    out = sample_loop(solver, model.predict, guide, x, gens, constrain, on_step)
    images = ctx.to_unit(out).clamp(0, 1).split([part.n for part in parts])
    for part, own in zip(parts, images, strict=True):
        if part.ctx.hook.stopped:
            continue
        part.ctx.outputs.save_images(own)
        if part.frames:
            part.ctx.outputs.save("frames.gif", encode_gif(part.frames, duration_ms=80), "image/gif")
    return list(images)


def run_samples(
    jobs: Sequence[tuple[Admitted[SampleJob], JobContext]], progress: ProgressHook | None = None
) -> list[dict[str, Any]]:
    """`sample` jobs sharing a model, schedule and guidance, as one batch; each job's results as if it ran alone."""
    parts = [Part(ctx, admitted.req.n, admitted.seed, [] if admitted.req.frames else None) for admitted, ctx in jobs]
    first, ctx = jobs[0][0].req, jobs[0][1]
    guide = cfg_over(ctx.model, [(admitted.req, admitted.req.n) for admitted, _ in jobs])
    generate(parts, guide, first, progress)
    batch = {"batch": {"jobs": len(jobs), "images": sum(p.n for p in parts)}} if len(jobs) > 1 else {}
    return [{"seeds": [p.seed + i for i in range(p.n)], **p.ctx.notes, **batch} for p in parts]


def run_sample(admitted: Admitted[SampleJob], ctx: JobContext) -> dict[str, Any]:
    return run_samples([(admitted, ctx)])[0]


def run_img2img(admitted: Admitted[Img2ImgJob], ctx: JobContext) -> dict[str, Any]:
    """SDEdit: for each i_start, the image noised to times[i_start] and denoised from there; one output each."""
    req, seed = admitted.req, admitted.seed
    model = ctx.model
    x0 = ctx.image(req.image, native=True)
    times = solver_for(model, req).times
    guide = cfg_for(ctx, req, 1)
    total = sum(len(times) - 1 - i for i in req.starts)
    done, outputs = 0, []
    for k, i_start in enumerate(req.starts):
        gens = generators(seed, 1, offset=k)
        x = start(model.process, times, i_start, gens, x0, image=x0)
        out = sample_loop(
            solver_for(model, req),
            model.predict,
            guide,
            x,
            gens,
            on_step=reporter(ctx.hook, "sampling", done, total, to_unit=ctx.to_unit),
            begin=i_start,
        )
        done += len(times) - 1 - i_start
        outputs.append(ctx.to_unit(out).clamp(0, 1))
        ctx.outputs.save_png(f"image_{k}.png", outputs[-1][0])
    if len(outputs) > 1:
        ctx.outputs.save_png("grid.png", make_grid(torch.cat(outputs), nrow=len(outputs)))
    return {"seed": seed, "i_start": req.starts, "t_start": [times[i] for i in req.starts], **ctx.notes}


def run_iterative(admitted: Admitted[DenoiseJob], ctx: JobContext) -> dict[str, Any]:
    """Iterative denoising (CS180 A 1.4): SDEdit of the image noised to times[i_start], on the job's prompt (if any)
    without guidance."""
    req, seed = admitted.req, admitted.seed
    model = ctx.model
    x0 = ctx.image(req.image, native=True)
    solver = solver_for(model, req)
    times = solver.times
    i_start = req.i_start if req.i_start is not None else 10
    gens = generators(seed, 1)
    noisy = start(model.process, times, i_start, gens, x0, image=x0)
    out = sample_loop(
        solver,
        model.predict,
        CFG(model.condition(req.prompt, None, 1), None),  # conditioned, unguided, as the course's 1.4
        noisy,
        gens,
        on_step=reporter(ctx.hook, "denoising", to_unit=ctx.to_unit),
        begin=i_start,
    )
    save_denoised(ctx, noisy, out)
    return {"seed": seed, "i_start": i_start, "t_start": times[i_start], **ctx.notes}


def run_inpaint(admitted: Admitted[InpaintJob], ctx: JobContext) -> dict[str, Any]:
    req, seed = admitted.req, admitted.seed
    x0 = ctx.image(req.image, native=True)
    mask_image = ctx.image(req.mask, native=True, name="mask")
    lo, hi = ctx.model.spec.value_range
    mask = ((mask_image - lo) / (hi - lo)).mean(1, keepdim=True).gt(0.5).float()  # (1, 1, H, W) 1 = regenerate
    original = x0.expand(req.n, -1, -1, -1)
    constrain = Inpaint(
        ctx.model.process, original, mask.expand(req.n, -1, -1, -1), generators(seed, req.n, offset=INPAINT_STREAM)
    )
    guide = cfg_for(ctx, req, req.n)
    generate([Part(ctx, req.n, seed)], guide, req, stage="inpainting", constrain=constrain)
    return {"seeds": [seed + i for i in range(req.n)], "masked_fraction": round(float(mask.mean()), 4), **ctx.notes}
