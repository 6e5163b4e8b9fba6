"""`noise`: the forward process (CS180 A 1.1, B 1.2)."""

from typing import Annotated, Literal, Self

from pydantic import Field, model_validator

from core.kinds.base import MAX_LIST, Door, JobBase, Kind, Upsampled, check_timesteps
from core.model_spec import ModelSpec
from core.schemas.images import ImageInput


class NoiseJob(Upsampled, JobBase):
    """The forward process (CS180 A 1.1, B 1.2): one noisy image per timestep or sigma."""

    kind: Literal["noise"]
    image: ImageInput
    timesteps: list[Annotated[int, Field(ge=0)]] | None = Field(
        default=None,
        min_length=1,
        max_length=MAX_LIST,
        description="DDPM: x_t = sqrt(abar) x0 + sqrt(1-abar) eps",
    )
    sigmas: list[Annotated[float, Field(ge=0, le=10)]] | None = Field(
        default=None, min_length=1, max_length=MAX_LIST, description="z = x + sigma eps, on [0, 1] images"
    )

    @model_validator(mode="after")
    def _one_schedule(self) -> Self:
        if (self.timesteps is None) == (self.sigmas is None):
            raise ValueError("give exactly one of `timesteps` or `sigmas`")
        return self


def check(req: NoiseJob, spec: ModelSpec, door: Door) -> None:
    if req.timesteps is not None:
        check_timesteps(spec, [(["timesteps", i], t) for i, t in enumerate(req.timesteps)])


KIND = Kind(
    "noise",
    NoiseJob,
    {"noise": frozenset({"any"})},
    check=check,
    example={
        "kind": "noise",
        "model": "mnist-ddpm",
        "image": {"dataset": "mnist-5k", "index": 12},
        "timesteps": [50, 250],
    },
)
