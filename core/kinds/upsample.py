"""`upsample`: DeepFloyd IF stage II, 64 to 256 pixels."""

from typing import Annotated, Literal

from pydantic import Field

from core.kinds.base import Conditioned, JobBase, Kind, Solving
from core.model_spec import ModelSpec
from core.schemas.images import ImageInput


class UpsampleJob(Conditioned, Solving, JobBase):
    """DeepFloyd IF stage II: a 64 px image (another size is resized to stage I's, and the result says so) to 256 px,
    guided by the prompt; as diffusers' IFSuperResolutionPipeline runs it, through the same loop as every kind."""

    kind: Literal["upsample"]
    image: ImageInput
    steps: Annotated[int, Field(ge=1, le=1000)] | None = Field(default=None, description="omitted: the model's (50)")
    noise_level: Annotated[int, Field(ge=0, le=999)] | None = Field(
        default=None,
        description="the timestep the low-resolution image is noised to before stage II sees it (its augmentation "
        "level); omitted: the model's (250)",
    )


def fill(req: UpsampleJob, spec: ModelSpec) -> None:
    """Stage II's own defaults, before the shared ones would give it stage I's guidance scale."""
    stage2 = spec.defaults.get("upsample", {})
    req.guidance_scale = req.guidance_scale if req.guidance_scale is not None else stage2.get("guidance_scale")
    solver_steps = spec.samplers[req.sampler].default_steps if req.sampler in spec.samplers else None
    req.steps = req.steps or (stage2.get("steps") if req.sampler in (None, "ddpm") else solver_steps)
    req.noise_level = req.noise_level if req.noise_level is not None else stage2.get("noise_level")


KIND = Kind("upsample", UpsampleJob, {"upsample": frozenset({"stage2"})}, fill=fill)
