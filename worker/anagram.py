"""`anagram`: one image that reads as a different prompt under each of its 2-4 views (CS180 A 1.8; Geng et al.,
"Visual Anagrams"), sampled with the `MultiView` rule (models/guidance.py). Stage II of DeepFloyd IF upsamples it
under the same views (`stage_two`)."""

from collections.abc import Sequence
from typing import Any

import torch

from core.kinds.anagram import AnagramJob
from core.kinds.base import Admitted
from models.animate import animation_frames
from models.deepfloyd import LowRes
from models.grid import make_grid
from models.guidance import MultiView
from models.imageio import encode_gif
from models.processes import NoiseProcess
from models.views import View, make_view
from worker.generate import Part, generate, guided, scale_of, solver_for
from worker.job_context import JobContext
from worker.model_cache import Servable
from worker.stage_two import StageTwoInputs, StageTwoRule

FRAME_MS = 60  # animation.gif: 20 frames (8 held, 12 moving) per view, about 1.2 s each


def anagram_views(req: AnagramJob, base: int) -> tuple[View, ...]:
    """The job's views with their arguments as given at side `base` (stage I's); they apply at any multiple of it."""
    return tuple(make_view(name, args, base) for name, args in zip(req.view_names, req.view_params(), strict=True))


def multi_view(
    model: Servable,
    req: AnagramJob,
    n: int,
    views: tuple[View, ...],
    scale: float,
    process: NoiseProcess,
    times: Sequence[float],
) -> MultiView:
    """The job's prompts under its views for n samples; `times`: the solver's, which `alternate` takes turns at."""
    conds = tuple(model.condition(p, None, n) for p in req.prompts)
    model_times = tuple(process.model_time(t) for t in times) if req.reduction == "alternate" else ()
    return MultiView(conds, model.condition(None, None, n), views, req.reduction, scale, model_times)


def save_views(ctx: JobContext, images: torch.Tensor, views: Sequence[View], prefix: str) -> list[str]:
    """`images` (n, C, H, W) in [0, 1] under each view k as {prefix}{k}.png (one image, or a row of n), the view
    applied in the model's value space (so `negate` negates about the range's middle on IF's [-1, 1])."""
    x, n = ctx.from_unit(images), images.shape[0]
    names = []
    for k, view in enumerate(views):
        viewed = ctx.to_unit(view.view(x)).clamp(0, 1)
        names.append(f"{prefix}{k}.png")
        ctx.outputs.save_png(names[-1], viewed[0] if n == 1 else make_grid(viewed, nrow=n))
    return names


def save_animation(ctx: JobContext, images: torch.Tensor, views: Sequence[View]) -> None:
    """animation.gif: the samples (a row of n) turning from each view to the next (models/animate.py)."""
    frames = animation_frames(ctx.from_unit(images), views, ctx.to_unit)
    grids = [make_grid(frame, nrow=frame.shape[0]) for frame in frames]
    ctx.outputs.save("animation.gif", encode_gif(grids, duration_ms=FRAME_MS), "image/gif")


def run_anagram(admitted: Admitted[AnagramJob], ctx: JobContext) -> dict[str, Any]:
    req, seed = admitted.req, admitted.seed
    model = ctx.model
    views = anagram_views(req, model.spec.image_size)
    times = solver_for(model, req).times if req.reduction == "alternate" else []  # only `alternate` takes turns
    rule = multi_view(model, req, req.n, views, scale_of(req), model.process, times)
    (images,) = generate([Part(ctx, req.n, seed)], guided(req, rule, model.process), req)
    if not ctx.hook.stopped:
        save_views(ctx, images, views, "view_")
        save_animation(ctx, images, views)
    shorthand = {"view": req.view} if req.views is None else {}
    return {"seeds": [seed + i for i in range(req.n)], "views": req.view_names, "reduction": req.reduction, **shorthand}


def stage_two(req: AnagramJob, at: StageTwoInputs) -> StageTwoRule:
    """Stage II under the job's views (their arguments at stage I's side) and prompts, the low-resolution condition
    viewed as MultiView views x, row for row; each view of the result saved as upsampled_view_{k}.png."""
    views = anagram_views(req, at.base)
    viewed = LowRes(torch.cat([v.view(at.condition.image) for v in views]), at.condition.noise_level)  # (K N, ...)
    rule = multi_view(at.ctx.model, req, at.n, views, at.scale, at.stage.process, at.times)

    def save(images: torch.Tensor) -> dict[str, Any]:
        return {"upsampled_views": save_views(at.ctx, images, views, "upsampled_view_")}

    return StageTwoRule(rule, viewed, save=save)
