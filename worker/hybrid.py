"""`hybrid`: an image as a sum of components, each generated under its own prompt (CS180 A 1.9; Geng et al.,
"Factorized Diffusion"), sampled with the `Factorized` rule (models/guidance.py); with a reference image, one
component held to it by `Hold` (models/factorize.py). Stage II of DeepFloyd IF upsamples it under the same
factorization (`stage_two`).
"""

from typing import Any

import torch

from core.kinds.base import Admitted
from core.kinds.hybrid import HybridJob
from models.factorize import Color, Decomposition, Frequency, Hold, Motion, Scale
from models.guidance import Factorized
from models.processes import NoiseProcess
from models.sampling import generators
from worker.generate import INPAINT_STREAM, Part, generate, guided, scale_of
from worker.job_context import JobContext
from worker.stage_two import StageTwoInputs, StageTwoRule


def decomposition(req: HybridJob) -> Decomposition:
    if req.decomposition == "color":
        return Color()
    if req.decomposition == "motion":
        return Motion(req.motion_length, req.motion_angle)
    if req.decomposition == "scale":
        return Scale(req.scale_factor)
    return Frequency(req.kernel_size, tuple(req.band_sigmas))


def component_conditions(req: HybridJob, ctx: JobContext, uncond: torch.Tensor, n: int) -> tuple[torch.Tensor, ...]:
    """One condition per component for n samples, coarsest first: the prompts in order, and for the component held
    to the image the unconditional one (the constraint replaces that component after each step; the unconditional
    estimate keeps the step from pushing it toward any prompt meanwhile)."""
    conds = [ctx.model.condition(p, None, n) for p in req.prompts]
    if req.held is not None:
        conds.insert(req.held, uncond)
    return tuple(conds)


def factorized(req: HybridJob, ctx: JobContext, n: int, decompose: Decomposition, scale: float) -> Factorized:
    uncond = ctx.model.condition(None, None, n)
    return Factorized(component_conditions(req, ctx, uncond, n), uncond, decompose, scale)


def hold(
    req: HybridJob, process: NoiseProcess, decompose: Decomposition, reference: torch.Tensor, n: int, seed: int
) -> Hold | None:
    """With an image, the `Hold` constraint on the held component, the reference's noise drawn from other generators
    than the samples' (as inpainting's known pixels)."""
    if req.held is None:
        return None
    return Hold(process, decompose, req.held, reference.expand(n, -1, -1, -1), generators(seed, n, INPAINT_STREAM))


def run_hybrid(admitted: Admitted[HybridJob], ctx: JobContext) -> dict[str, Any]:
    req, seed = admitted.req, admitted.seed
    decompose = decomposition(req)
    rule = factorized(req, ctx, req.n, decompose, scale_of(req))
    held = None
    if req.image is not None:
        held = hold(req, ctx.model.process, decompose, ctx.image(req.image, native=True), req.n, seed)
    generate([Part(ctx, req.n, seed)], guided(req, rule, ctx.model.process), req, constrain=held)
    notes = {"hold": req.held} if req.held is not None else {}
    return {"seeds": [seed + i for i in range(req.n)], "decomposition": req.decomposition, **notes, **ctx.notes}


def stage_two(req: HybridJob, at: StageTwoInputs) -> StageTwoRule:
    """Stage II under the same factorization, its lengths scaled to stage II's side (models/factorize.py), the
    component held to the image held to it read at stage II's side."""
    decompose = decomposition(req).scaled(at.factor)
    rule = factorized(req, at.ctx, at.n, decompose, at.scale)
    if req.image is None:
        return StageTwoRule(rule)
    reference = at.ctx.image(req.image, side=at.stage.size)
    return StageTwoRule(rule, constrain=hold(req, at.stage.process, decompose, reference, at.n, at.seed))
