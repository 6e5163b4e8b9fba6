"""The job kinds of API.md as one discriminated union on `kind`; defaults filled in here are what `params` shows."""

from typing import Annotated, Literal, Self

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, model_validator

from service.schemas.images import ImageInput

MAX_LIST = 64
Seed = Annotated[int, Field(ge=0, le=2**63 - 1)]


class JobBase(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    kind: str
    model: str = Field(max_length=64, description="a model id from GET /v1/models")
    seed: Seed | None = Field(default=None, description="the same seed gives the same pixels; omitted: drawn")

    @property
    def capability(self) -> str:
        """What the model must be able to run: `kind`, or `kind.method`."""
        return self.kind

    def image_inputs(self) -> dict[str, ImageInput]:
        """The request's image inputs by field name, for checks at the door and resolution in the worker."""
        return {name: value for name, value in self if isinstance(value, ImageInput)}


class NoiseJob(JobBase):
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


class DenoiseJob(JobBase):
    """Denoising of an image noised first to `timestep` or `sigma` (CS180 A 1.2-1.4, B 1.2); neither: as given."""

    kind: Literal["denoise"]
    image: ImageInput
    method: Literal["blur", "one_step", "iterative"] = "blur"
    timestep: Annotated[int, Field(ge=0)] | None = None
    sigma: Annotated[float, Field(ge=0, le=10)] | None = None
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


JobRequest = Annotated[NoiseJob | DenoiseJob, Field(discriminator="kind")]
JOB_REQUEST: TypeAdapter[NoiseJob | DenoiseJob] = TypeAdapter(JobRequest)
KINDS = ("noise", "denoise")


def parse_job(data: object) -> NoiseJob | DenoiseJob:
    """Validates a job payload: at the door, and again in the worker for what it dequeues."""
    return JOB_REQUEST.validate_python(data)
