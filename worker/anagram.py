"""`anagram`: one image that reads as a different prompt under each of its views (CS180 A 1.8; Geng et al.,
"Visual Anagrams"), sampled with the `MultiView` rule (models/guidance.py)."""

from typing import Any

from core.kinds.anagram import AnagramJob
from core.kinds.base import Admitted
from models.guidance import MultiView
from models.views import VIEWS
from worker.generate import Part, generate, guided, scale_of
from worker.job_context import JobContext


def run_anagram(admitted: Admitted[AnagramJob], ctx: JobContext) -> dict[str, Any]:
    req, seed = admitted.req, admitted.seed
    model = ctx.model
    conds = tuple(model.condition(p, None, req.n) for p in req.prompts)
    view = VIEWS[req.view]
    uncond = model.condition(None, None, req.n)
    rule = MultiView(conds, uncond, (VIEWS["identity"], view), "mean", scale_of(req))
    (images,) = generate([Part(ctx, req.n, seed)], guided(req, rule, model.process), req)
    for i, image in enumerate(images):
        ctx.outputs.save_png(f"view_{i}.png", view.view(image))  # the second reading, as the eye sees it turned
    return {"seeds": [seed + i for i in range(req.n)], "view": req.view}
