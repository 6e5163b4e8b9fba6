"""Which function runs each capability (`kind` or `kind.method`): the worker's side of the job-kind registry
(core/kinds/__init__.py has the other). Adding a kind: its function, and a line in `BUILTIN`; a kind whose rule
should carry over to DeepFloyd IF's stage II, a line in `STAGE_TWO` (worker/stage_two.py)."""

import importlib
from typing import Any

from core.kinds.base import Admitted, JobBase, Upsampled
from core.settings import get_settings
from worker import anagram, generate, hybrid, noising, upsample
from worker.job_context import JobContext, Runner
from worker.stage_two import StageTwo

BUILTIN: dict[str, Runner] = {
    "noise": noising.run_noise,
    "denoise.blur": noising.run_blur,
    "denoise.one_step": noising.run_one_step,
    "denoise.iterative": generate.run_iterative,
    "sample": generate.run_sample,
    "img2img": generate.run_img2img,
    "inpaint": generate.run_inpaint,
    "anagram": anagram.run_anagram,
    "hybrid": hybrid.run_hybrid,
    "upsample": upsample.run_upsample,
}
RUNNERS: dict[str, Runner] = dict(BUILTIN)
STAGE_TWO: dict[str, StageTwo] = {"anagram": anagram.stage_two, "hybrid": hybrid.stage_two}  # the rest: CFG


def load_extra(packages: list[str]) -> None:
    """Adds each package's `runner` module's `RUNNERS` (EXTRA_KINDS); a capability cannot be run twice."""
    for package in packages:
        extra: dict[str, Runner] = importlib.import_module(f"{package}.runner").RUNNERS
        if clash := RUNNERS.keys() & extra.keys():
            raise ValueError(f"{package}.runner: capabilities registered already: {sorted(clash)}")
        RUNNERS.update(extra)


def run_kind(admitted: Admitted[JobBase], ctx: JobContext) -> dict[str, Any]:
    """The kind's function, then stage II over its images where the job asks (`upsample: true`)."""
    result = RUNNERS[admitted.req.capability](admitted, ctx)
    if isinstance(admitted.req, Upsampled) and admitted.req.upsample:
        result.update(upsample.upsample_outputs(admitted, ctx, STAGE_TWO.get(admitted.req.capability)))
    return result


load_extra(get_settings().extra_kind_packages)
