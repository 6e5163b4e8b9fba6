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
    i_start: Annotated[int, Field(ge=0)] | None = Field(
        default=None, description="iterative: noise the image to the run's i_start-th time, then denoise from there"
    )
    stride: Annotated[int, Field(ge=1, le=1000)] | None = Field(default=None, description="iterative: DDPM stride")
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


class Conditioned(BaseModel):
    """Conditioning shared by the generating kinds: a prompt (a class name for the in-house models), or a class."""

    prompt: str | None = Field(default=None, max_length=500, description="text for DeepFloyd IF; a class name here")
    class_label: Annotated[int, Field(ge=0)] | None = None
    guidance_scale: Annotated[float, Field(ge=0, le=50)] | None = Field(
        default=None, description="CFG gamma; omitted: the model's default (5 for the MNIST models)"
    )

    @model_validator(mode="after")
    def _one_condition(self) -> Self:
        if self.prompt is not None and self.class_label is not None:
            raise ValueError("give at most one of `prompt` or `class_label`")
        return self


class Schedule(BaseModel):
    """Which times a loop visits: every `stride`-th timestep (DDPM), or `steps` of them; omitted: the model's."""

    steps: Annotated[int, Field(ge=1, le=1000)] | None = None
    stride: Annotated[int, Field(ge=1, le=1000)] | None = None

    @model_validator(mode="after")
    def _one_schedule(self) -> Self:
        if self.steps is not None and self.stride is not None:
            raise ValueError("give at most one of `steps` or `stride`")
        return self


Count = Annotated[int, Field(ge=1, le=64, description="how many images")]


class SampleJob(Conditioned, Schedule, JobBase):
    """Sampling from pure noise, with classifier-free guidance (CS180 A 1.5, 1.6, B 2.3, 2.6)."""

    kind: Literal["sample"]
    n: Count = 4
    frames: bool = Field(default=False, description="add frames.gif, the denoising process")


class Img2ImgJob(Conditioned, Schedule, JobBase):
    """SDEdit (CS180 A 1.7, 1.7.1, 1.7.3): the image noised to `i_start`, then denoised; one output per i_start."""

    kind: Literal["img2img"]
    image: ImageInput
    i_start: Annotated[int, Field(ge=0)] | list[Annotated[int, Field(ge=0)]] = Field(
        default_factory=lambda: [1, 3, 5, 7, 10, 20], description="one index into the run's times, or a list"
    )

    @property
    def starts(self) -> list[int]:
        return self.i_start if isinstance(self.i_start, list) else [self.i_start]


class InpaintJob(Conditioned, Schedule, JobBase):
    """Regenerate the masked region only (CS180 A 1.7.2); mask white = regenerate, black = keep."""

    kind: Literal["inpaint"]
    image: ImageInput
    mask: ImageInput
    n: Count = 1


class AnagramJob(Schedule, JobBase):
    """A visual anagram (CS180 A 1.8): the first prompt upright, the second under `view`."""

    kind: Literal["anagram"]
    prompts: list[Annotated[str, Field(max_length=500)]] = Field(min_length=2, max_length=2)
    view: Literal["flip", "rotate_180", "negate"] = "flip"
    guidance_scale: Annotated[float, Field(ge=0, le=50)] | None = None
    n: Count = 1


class HybridJob(Schedule, JobBase):
    """A hybrid image (CS180 A 1.9): low frequencies of the first prompt, high of the second."""

    kind: Literal["hybrid"]
    prompts: list[Annotated[str, Field(max_length=500)]] = Field(min_length=2, max_length=2)
    kernel_size: Annotated[int, Field(ge=1, le=65)] = 33
    sigma: Annotated[float, Field(gt=0, le=32)] = 2.0
    guidance_scale: Annotated[float, Field(ge=0, le=50)] | None = None
    n: Count = 1

    @model_validator(mode="after")
    def _odd_kernel(self) -> Self:
        if self.kernel_size % 2 == 0:
            raise ValueError("`kernel_size` must be odd")
        return self


AnyJob = NoiseJob | DenoiseJob | SampleJob | Img2ImgJob | InpaintJob | AnagramJob | HybridJob
JobRequest = Annotated[AnyJob, Field(discriminator="kind")]
JOB_REQUEST: TypeAdapter[AnyJob] = TypeAdapter(JobRequest)
KINDS = ("noise", "denoise", "sample", "img2img", "inpaint", "anagram", "hybrid")


def parse_job(data: object) -> AnyJob:
    """Validates a job payload: at the door, and again in the worker for what it dequeues."""
    return JOB_REQUEST.validate_python(data)
