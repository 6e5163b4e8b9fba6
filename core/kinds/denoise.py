"""`denoise`: Gaussian-blur, one-step and iterative denoising of a noised image (CS180 A 1.2-1.4, B 1.2)."""

from typing import Annotated, Literal, Self

from pydantic import Field, model_validator

from core.errors import InvalidRequest
from core.kinds.base import Door, JobBase, Kind, Stepping, Upsampled, check_starts, check_timesteps
from core.model_spec import ModelSpec
from core.schemas.images import ImageInput

COURSE_I_START = 10  # iterative denoising's start in the course (A 1.4)


class DenoiseJob(Stepping, Upsampled, JobBase):
    """Denoising of an image noised first to `timestep` or `sigma` (CS180 A 1.2-1.4, B 1.2); neither: as given."""

    kind: Literal["denoise"]
    image: ImageInput
    method: Literal["blur", "one_step", "iterative"] = "blur"
    timestep: Annotated[int, Field(ge=0)] | None = None
    sigma: Annotated[float, Field(ge=0, le=10)] | None = None
    i_start: Annotated[int, Field(ge=0)] | None = Field(
        default=None, description="iterative: noise the image to the run's i_start-th time, then denoise from there"
    )
    prompt: str | None = Field(
        default=None,
        max_length=500,
        description="one_step and iterative: the condition of the estimates, without guidance (the course's 'a high "
        "quality photo'; a class name for the MNIST models); omitted: unconditional",
    )
    kernel_size: Annotated[int, Field(ge=1, le=65)] = Field(default=7, description="blur: odd Gaussian kernel size")
    blur_sigma: Annotated[float, Field(gt=0, le=32)] | None = Field(
        default=None, description="blur: the Gaussian's sigma; omitted: 0.3 ((kernel_size - 1) / 2 - 1) + 0.8"
    )

    @model_validator(mode="after")
    def _check(self) -> Self:
        if self.timestep is not None and self.sigma is not None:
            raise ValueError("give at most one of `timestep` or `sigma`")
        if self.kernel_size % 2 == 0:
            raise ValueError("`kernel_size` must be odd")
        if self.blur_sigma is None:
            self.blur_sigma = round(0.3 * ((self.kernel_size - 1) * 0.5 - 1) + 0.8, 6)
        return self

    @property
    def capability(self) -> str:
        return f"denoise.{self.method}"

    @property
    def runs_solver(self) -> bool:
        return self.method == "iterative"


def check(req: DenoiseJob, spec: ModelSpec, door: Door) -> None:
    if req.method == "iterative" and req.i_start is None:
        req.i_start = COURSE_I_START
    if req.method == "one_step" and spec.is_denoiser and req.sigma is None:
        req.sigma = spec.defaults.get("sigma")
    if req.timestep is not None:
        check_timesteps(spec, [(["timestep"], req.timestep)])
    if req.i_start is not None:
        check_starts(spec, req, [(["i_start"], req.i_start)])
    check_method(spec, req)


def check_method(spec: ModelSpec, req: DenoiseJob) -> None:
    """Which noise each method takes, on which model."""
    if req.method == "blur" and req.prompt is not None:
        raise InvalidRequest.field(["prompt"], "blur denoising runs no network: it takes no prompt")
    if req.method == "one_step" and spec.is_denoiser and req.timestep is not None:
        raise InvalidRequest.field(["timestep"], f"{spec.id} denoises z = x + sigma eps; give `sigma`")
    if req.method in ("one_step", "iterative") and not spec.is_denoiser and req.sigma is not None:
        raise InvalidRequest.field(["sigma"], f"{spec.id} is a diffusion model; give `timestep` or `i_start`")
    if req.method == "one_step" and not spec.is_denoiser and req.timestep is None and req.i_start is None:
        raise InvalidRequest.field(
            ["timestep"], "one-step denoising on a diffusion model needs `timestep` or `i_start`"
        )
    if req.method == "iterative" and req.timestep is not None:
        raise InvalidRequest.field(["timestep"], "iterative denoising starts at `i_start` of the run's times")


KIND = Kind(
    "denoise",
    DenoiseJob,
    {
        "denoise.blur": frozenset({"any"}),
        "denoise.one_step": frozenset({"denoiser", "diffusion"}),
        "denoise.iterative": frozenset({"diffusion"}),
    },
    check=check,
    example={
        "kind": "denoise",
        "model": "mnist-denoiser",
        "image": {"dataset": "mnist-5k", "index": 3},
        "method": "one_step",
        "sigma": 0.5,
    },
)
