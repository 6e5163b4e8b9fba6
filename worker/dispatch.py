"""Which function runs each capability (`kind` or `kind.method`)."""

from typing import Any

from service.schemas.jobs import JobBase
from worker import generate, kinds
from worker.kinds import JobContext, Kind

KINDS: dict[str, Kind] = {
    "noise": kinds.run_noise,
    "denoise.blur": kinds.run_blur,
    "denoise.one_step": kinds.run_one_step,
    "denoise.iterative": generate.run_iterative,
    "sample": generate.run_sample,
    "img2img": generate.run_img2img,
    "inpaint": generate.run_inpaint,
    "anagram": generate.run_anagram,
    "hybrid": generate.run_hybrid,
}


def run_kind(req: JobBase, ctx: JobContext) -> dict[str, Any]:
    return KINDS[req.capability](req, ctx)
