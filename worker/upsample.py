"""DeepFloyd IF stage II: the `upsample` kind, and `upsample: true` on any image-making kind (each image_{i}.png
through stage II as upsampled_{i}.png; an anagram's under its views). Stage II runs through the same loop as every
kind: its UNet behind the predictor call, with the low-resolution image as a condition of every branch
(models/deepfloyd.py)."""

import re
from typing import Any

import torch

from core.kinds.anagram import AnagramJob
from core.kinds.base import Admitted, Conditioned, JobBase, Solving
from core.kinds.upsample import UpsampleJob
from models.deepfloyd import LowRes, low_res
from models.forward import randn_like_per_sample
from models.guidance import Guide
from models.imageio import resize
from models.processes import DDPM
from models.sampling import generators, sample_loop, start
from models.solvers import make_solver
from models.views import View
from worker.anagram import anagram_views, multi_view, save_views
from worker.deepfloyd import IFModel, Stage
from worker.errors import InputError
from worker.generate import cfg_for, reporter, scale_of
from worker.job_context import JobContext

IMAGE_NAME = re.compile(r"image_(\d+)\.png")
LOW_RES_STREAM = 2_000_003  # the low-resolution image's noise comes from other generators than the samples'


def stage_two(ctx: JobContext) -> tuple[IFModel, Stage, DDPM]:
    """The job's model, its stage II and stage II's image-noising schedule; an InputError where it has none."""
    model = ctx.model
    if not isinstance(model, IFModel) or model.stage2 is None or model.noising is None:
        reason = model.stage2_reason if isinstance(model, IFModel) else "it is not DeepFloyd IF"
        raise InputError(f"{model.spec.id} cannot upsample here: {reason}")
    return model, model.stage2, model.noising


def upsample(
    ctx: JobContext,
    images: torch.Tensor,
    req: Conditioned,
    solving: Solving,
    steps: int,
    noise_level: int,
    seed: int,
    anagram: tuple[AnagramJob, tuple[View, ...]] | None = None,
) -> torch.Tensor:
    """`images` (N, 3, s, s) in [-1, 1] through stage II, with `solving`'s sampler; returns (N, 3, S, S) in [0, 1].
    With `anagram` (the job and its views), under the job's views and prompts, the low-resolution condition viewed
    as MultiView views x, row for row; otherwise on `req`'s prompt."""
    model, stage, noising = stage_two(ctx)
    n = images.shape[0]
    like = torch.empty(n, 3, stage.size, stage.size, device=model.device)
    condition = low_res(
        images, stage.size, noising, noise_level, randn_like_per_sample(like, generators(seed, n, LOW_RES_STREAM))
    )
    solver = make_solver(stage.process, solving.sampler, steps, None, solving.eta, solving.spacing)
    guide: Guide
    if anagram is None:
        predict, guide = stage.predictor(condition), cfg_for(ctx, req, n, stage.process)
    else:
        job, views = anagram
        viewed = torch.cat([v.view(condition.image) for v in views])  # (K N, 3, S, S), as MultiView's copies of x
        predict = stage.predictor(LowRes(viewed, condition.noise_level))
        guide = multi_view(model, job, n, views, scale_of(req), stage.process, solver.times)
    gens = generators(seed, n)
    x = start(stage.process, solver.times, 0, gens, like)
    out = sample_loop(solver, predict, guide, x, gens, on_step=reporter(ctx.hook, "upsampling", to_unit=ctx.to_unit))
    return ctx.to_unit(out).clamp(0, 1)


def run_upsample(admitted: Admitted[UpsampleJob], ctx: JobContext) -> dict[str, Any]:
    req, seed = admitted.req, admitted.seed
    assert req.steps is not None and req.noise_level is not None
    _, stage, _ = stage_two(ctx)  # before the image is read: a model without stage II fails at once
    image = ctx.image(req.image, native=True)  # stage I's size
    ctx.outputs.save_images(upsample(ctx, image, req, req, req.steps, req.noise_level, seed))
    return {"seed": seed, "size": [stage.size, stage.size], **ctx.notes}


def _sized(image: torch.Tensor, side: int) -> torch.Tensor:
    return image if image.shape[-2:] == (side, side) else resize(image, (side, side)).clamp(0, 1)


def upsample_outputs(admitted: Admitted[JobBase], ctx: JobContext) -> dict[str, Any]:
    """Each image_{i}.png the job made, through stage II with the job's prompt (none for hybrids), as
    upsampled_{i}.png: stage II's defaults but the job's sampler (at its default steps), sample i seeded with the
    job's seed + i, as image_{i} was. An anagram's go through under its views and prompts (MultiView), and each
    view of them is saved as upsampled_view_{k}.png, as view_{k}.png at stage I."""
    req = admitted.req
    model, _, _ = stage_two(ctx)
    defaults = model.spec.defaults["upsample"]
    made = {int(m[1]): image for name, image in ctx.outputs.pngs.items() if (m := IMAGE_NAME.fullmatch(name))}
    if not made:
        return {}
    order = sorted(made)
    side = model.stage1.size
    images = ctx.from_unit(torch.cat([_sized(made[i][None], side) for i in order]))  # (N, 3, s, s)
    conditioning = Conditioned(prompt=getattr(req, "prompt", None), guidance_scale=defaults["guidance_scale"])
    solving = req if isinstance(req, Solving) and req.sampler != "ddpm" else Solving()
    steps = model.spec.samplers[solving.sampler].default_steps if solving.sampler else defaults["steps"]
    anagram = (req, anagram_views(req, side)) if isinstance(req, AnagramJob) else None
    noise_level = defaults["noise_level"]
    out = upsample(ctx, images, conditioning, solving, steps, noise_level, admitted.seed, anagram)
    names = [f"upsampled_{i}.png" for i in order]
    for name, image in zip(names, out, strict=True):
        ctx.outputs.save_png(name, image)
    if anagram is None:
        return {"upsampled": names}
    return {"upsampled": names, "upsampled_views": save_views(ctx, out, anagram[1], "upsampled_view_")}
