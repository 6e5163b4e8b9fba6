"""`img2img`: SDEdit, the image noised to `i_start` then denoised (CS180 A 1.7, 1.7.1, 1.7.3)."""

from typing import Annotated, Literal

from pydantic import Field

from core.kinds.base import Conditioned, Door, JobBase, Kind, Loc, Stepping, Upsampled, check_starts
from core.model_spec import ModelSpec
from core.schemas.images import ImageInput

COURSE_STARTS, COURSE_STEPS = (1, 3, 5, 7, 10, 20), 33  # SDEdit's i_start list over IF's 990 -> 0 by 30 (A 1.7)


class Img2ImgJob(Conditioned, Stepping, Upsampled, JobBase):
    """SDEdit (CS180 A 1.7, 1.7.1, 1.7.3): the image noised to `i_start`, then denoised; one output per i_start."""

    kind: Literal["img2img"]
    image: ImageInput
    i_start: Annotated[int, Field(ge=0)] | list[Annotated[int, Field(ge=0)]] | None = Field(
        default=None,
        description="one index into the run's times, or a list; omitted: the course's [1, 3, 5, 7, 10, 20] of "
        "DeepFloyd's 33 strided steps, at the same fractions of this run",
    )

    @property
    def starts(self) -> list[int]:
        assert self.i_start is not None, "admission fills in the default"
        return self.i_start if isinstance(self.i_start, list) else [self.i_start]


def course_starts(steps: int) -> list[int]:
    """The course's i_start list at the same fractions of a run of `steps` steps."""
    return sorted({min(steps - 1, round(i * steps / COURSE_STEPS)) for i in COURSE_STARTS})


def check(req: Img2ImgJob, spec: ModelSpec, door: Door) -> None:
    if req.i_start is None:
        own_run = (req.steps, req.stride) == (spec.defaults.get("steps"), spec.defaults.get("stride"))
        if own_run and "i_start" in spec.defaults:  # the course's list on the course's schedule (IF)
            req.i_start = list(spec.defaults["i_start"])
        else:
            req.i_start = course_starts(spec.num_times(req.steps, req.stride) - 1)
    listed = isinstance(req.i_start, list)
    starts: list[tuple[Loc, int]] = [(["i_start", i] if listed else ["i_start"], v) for i, v in enumerate(req.starts)]
    check_starts(spec, req, starts)


KIND = Kind("img2img", Img2ImgJob, {"img2img": frozenset({"diffusion"})}, check=check)
