"""`hybrid`: an image as a sum of components, each generated under its own prompt (CS180 A 1.9; Geng et al.,
"Factorized Diffusion"), sampled with the `Factorized` rule (models/guidance.py); with a reference image, one
component held to it by `Hold` (models/factorize.py).
"""

from typing import Any

import torch

from core.kinds.base import Admitted
from core.kinds.hybrid import HybridJob
from models.factorize import Color, Decomposition, Frequency, Hold, Motion, Scale
from models.guidance import Factorized
from models.sampling import generators
from worker.generate import INPAINT_STREAM, Part, generate, guided, scale_of
from worker.job_context import JobContext


def decomposition(req: HybridJob) -> Decomposition:
    if req.decomposition == "color":
        return Color()
    if req.decomposition == "motion":
        return Motion(req.motion_length)
    if req.decomposition == "scale":
        return Scale(req.scale_factor)
    return Frequency(req.kernel_size, tuple(req.band_sigmas))


def component_conditions(req: HybridJob, ctx: JobContext, uncond: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """One condition per component, coarsest first: the prompts in order, and for the component held to the image
    the unconditional one (the constraint replaces that component after each step; the unconditional estimate keeps
    the step from pushing it toward any prompt meanwhile)."""
    conds = [ctx.model.condition(p, None, req.n) for p in req.prompts]
    if req.held is not None:
        conds.insert(req.held, uncond)
    return tuple(conds)


def run_hybrid(admitted: Admitted[HybridJob], ctx: JobContext) -> dict[str, Any]:
    """The factorized rule over the components; with an image, the `Hold` constraint on the held one, the reference's
    noise drawn from other generators than the samples' (as inpainting's known pixels)."""
    req, seed = admitted.req, admitted.seed
    model = ctx.model
    uncond = model.condition(None, None, req.n)
    decompose = decomposition(req)
    rule = Factorized(component_conditions(req, ctx, uncond), uncond, decompose, scale_of(req))
    hold, held = None, {}
    if req.image is not None and req.held is not None:
        reference = ctx.image(req.image, native=True).expand(req.n, -1, -1, -1)
        gens = generators(seed, req.n, offset=INPAINT_STREAM)
        hold, held = Hold(model.process, decompose, req.held, reference, gens), {"hold": req.held}
    generate([Part(ctx, req.n, seed)], guided(req, rule, model.process), req, constrain=hold)
    return {"seeds": [seed + i for i in range(req.n)], "decomposition": req.decomposition, **held, **ctx.notes}
