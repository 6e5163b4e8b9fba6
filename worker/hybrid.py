"""`hybrid`: an image as a sum of components, each generated under its own prompt (CS180 A 1.9; Geng et al.,
"Factorized Diffusion"), sampled with the `Factorized` rule (models/guidance.py)."""

from typing import Any

from core.kinds.base import Admitted
from core.kinds.hybrid import HybridJob
from models.factorize import Color, Decomposition, Frequency, Motion, Scale
from models.guidance import Factorized
from worker.generate import Part, generate, guided, scale_of
from worker.job_context import JobContext


def decomposition(req: HybridJob) -> Decomposition:
    if req.decomposition == "color":
        return Color()
    if req.decomposition == "motion":
        return Motion(req.motion_length)
    if req.decomposition == "scale":
        return Scale(req.scale_factor)
    return Frequency(req.kernel_size, tuple(req.band_sigmas))


def run_hybrid(admitted: Admitted[HybridJob], ctx: JobContext) -> dict[str, Any]:
    req, seed = admitted.req, admitted.seed
    model = ctx.model
    conds = tuple(model.condition(p, None, req.n) for p in req.prompts)
    uncond = model.condition(None, None, req.n)
    rule = Factorized(conds, uncond, decomposition(req), scale_of(req))
    generate([Part(ctx, req.n, seed)], guided(req, rule, model.process), req)
    return {"seeds": [seed + i for i in range(req.n)], "decomposition": req.decomposition}
