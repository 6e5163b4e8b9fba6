"""DeepFloyd IF stage II: the `upsample` kind, and `upsample: true` on any image-making kind (each image_{i}.png
through stage II as upsampled_{i}.png; under the kind's own rule where it has one, worker/stage_two.py). Stage II
runs through the same loop as every kind: its UNet behind the predictor call, with the low-resolution image as a
condition of every branch (models/deepfloyd.py)."""

import functools
import re
from collections.abc import Callable
from typing import Any

import torch

from core.kinds.base import Admitted, Conditioned, JobBase, Solving
from core.kinds.upsample import UpsampleJob
from models.deepfloyd import low_res
from models.forward import randn_like_per_sample
from models.imageio import resize
from models.processes import DDPM
from models.sampling import generators, sample_loop, start
from models.solvers import make_solver
from worker.deepfloyd import IFModel, Stage
from worker.errors import InputError
from worker.generate import cfg_for, reporter, scale_of
from worker.job_context import JobContext
from worker.stage_two import StageTwo, StageTwoInputs, StageTwoRule

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
    rule: Callable[[StageTwoInputs], StageTwoRule] | None = None,
) -> tuple[torch.Tensor, StageTwoRule]:
    """`images` (N, 3, s, s) in [-1, 1] through stage II, with `solving`'s sampler; returns (N, 3, S, S) in [0, 1]
    and the rule it ran. `rule`: the kind's (worker/stage_two.py); without one, CFG on `req`'s prompt."""
    model, stage, noising = stage_two(ctx)
    n = images.shape[0]
    like = torch.empty(n, 3, stage.size, stage.size, device=model.device)
    condition = low_res(
        images, stage.size, noising, noise_level, randn_like_per_sample(like, generators(seed, n, LOW_RES_STREAM))
    )
    solver = make_solver(stage.process, solving.sampler, steps, None, solving.eta, solving.spacing)
    inputs = StageTwoInputs(ctx, stage, model.stage1.size, n, seed, scale_of(req), solver.times, condition)
    plan = StageTwoRule(cfg_for(ctx, req, n, stage.process)) if rule is None else rule(inputs)
    predict = stage.predictor(condition if plan.condition is None else plan.condition)
    gens = generators(seed, n)
    x = start(stage.process, solver.times, 0, gens, like)
    on_step = reporter(ctx.hook, "upsampling", to_unit=ctx.to_unit)
    out = sample_loop(solver, predict, plan.guide, x, gens, constrain=plan.constrain, on_step=on_step)
    return ctx.to_unit(out).clamp(0, 1), plan


def run_upsample(admitted: Admitted[UpsampleJob], ctx: JobContext) -> dict[str, Any]:
    req, seed = admitted.req, admitted.seed
    assert req.steps is not None and req.noise_level is not None
    _, stage, _ = stage_two(ctx)  # before the image is read: a model without stage II fails at once
    image = ctx.image(req.image, native=True)  # stage I's size
    ctx.outputs.save_images(upsample(ctx, image, req, req, req.steps, req.noise_level, seed)[0])
    return {"seed": seed, "size": [stage.size, stage.size], **ctx.notes}


def _sized(image: torch.Tensor, side: int) -> torch.Tensor:
    return image if image.shape[-2:] == (side, side) else resize(image, (side, side)).clamp(0, 1)


def upsample_outputs(admitted: Admitted[JobBase], ctx: JobContext, rule: StageTwo | None = None) -> dict[str, Any]:
    """Each image_{i}.png the job made, through stage II as upsampled_{i}.png: stage II's defaults but the job's
    sampler (at its default steps), sample i seeded with the job's seed + i, as image_{i} was; under the kind's own
    `rule` where it has one (its views, its components), else CFG on the job's prompt (none: unconditional)."""
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
    kind_rule = None if rule is None else functools.partial(rule, req)
    out, plan = upsample(ctx, images, conditioning, solving, steps, defaults["noise_level"], admitted.seed, kind_rule)
    names = [f"upsampled_{i}.png" for i in order]
    for name, image in zip(names, out, strict=True):
        ctx.outputs.save_png(name, image)
    return {"upsampled": names, **(plan.save(out) if plan.save else {})}
