"""Which function runs each capability (`kind` or `kind.method`)."""

from typing import Any

from core.schemas.jobs import JobBase, Upsampled
from worker import generate, kinds, upsample
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
    "upsample": upsample.run_upsample,
}


def run_kind(req: JobBase, ctx: JobContext) -> dict[str, Any]:
    """The kind's function, then stage II over its images where the job asks (`upsample: true`)."""
    result = KINDS[req.capability](req, ctx)
    if isinstance(req, Upsampled) and req.upsample:
        result.update(upsample.upsample_outputs(req, ctx))
    return result
