"""What every job kind shares: the request's base and its mixins (seed, webhook, schedule, guidance, conditioning),
the admitted request a worker runs, and what a kind declares to the registry (core/kinds/__init__.py)."""

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Annotated, Any, Generic, Literal, Self, TypeVar

import redis
from pydantic import BaseModel, ConfigDict, Field, HttpUrl, ValidationInfo, field_validator, model_validator

from core.errors import InvalidRequest
from core.model_spec import ModelSpec
from core.queues import Priority
from core.samplers import Sampler, Spacing
from core.schemas.images import ImageInput
from core.settings import Settings

MAX_LIST = 64
Seed = Annotated[int, Field(ge=0, le=2**63 - 1)]
WebhookEvent = Literal["start", "progress", "completed"]


class JobBase(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    kind: str
    model: str = Field(max_length=64, description="a model id from GET /v1/models")
    seed: Seed | None = Field(default=None, description="the same seed gives the same pixels; omitted: drawn")
    webhook: HttpUrl | None = Field(
        default=None, description="an http(s) URL the service POSTs the Job to, signed (docs/client.md, 'Webhooks')"
    )
    webhook_events: list[WebhookEvent] | None = Field(
        default=None,
        validate_default=True,
        min_length=1,
        max_length=3,
        description="when to POST to `webhook`: start, progress (at most once a second), completed (the default)",
    )
    priority: Priority = Field(
        default="normal",
        description="high jobs start before normal ones, normal before low (docs/operations/scaling.md, "
        "'Priorities'); 'high' only for the keys the deployment allows",
    )
    timeout_s: int | None = Field(
        default=None,
        ge=1,
        description="the job ends as timed_out past this many seconds of running; at most the kind's bound on "
        "this deployment (JOB_TIMEOUT_MAX_S), which is also the default",
    )

    @field_validator("webhook_events")
    @classmethod
    def _webhook_events(cls, value: list[str] | None, info: ValidationInfo) -> list[str] | None:
        if info.data.get("webhook") is None:
            if value is not None:
                raise ValueError("needs a `webhook`")
            return None
        return list(dict.fromkeys(value or ["completed"]))

    @property
    def capability(self) -> str:
        """What the model must be able to run: `kind`, or `kind.method`."""
        return self.kind

    def image_count(self) -> int:
        """The images the job makes, as a key's daily image budget counts them (docs/operations/quotas.md)."""
        n = getattr(self, "n", 1)
        return n if isinstance(n, int) else 1

    def image_inputs(self) -> dict[str, ImageInput]:
        """The request's image inputs by field name, for checks at the door and resolution in the worker."""
        return {name: value for name, value in self if isinstance(value, ImageInput)}

    def prompt_inputs(self) -> list[tuple[list[str | int], str]]:
        """The request's prompts with where each is (`prompt`, each of `prompts`), for the checks at the door: a kind
        with prompts declares nothing more."""
        found: list[tuple[list[str | int], str]] = []
        prompt = getattr(self, "prompt", None)
        if isinstance(prompt, str):
            found.append((["prompt"], prompt))
        listed = getattr(self, "prompts", None)
        if isinstance(listed, list):
            found += [(["prompts", i], p) for i, p in enumerate(listed)]
        return found


class Upsampled(BaseModel):
    """Any image-making kind on DeepFloyd IF may add the 256 px version of each image_{i}.png (stage II)."""

    upsample: bool = Field(
        default=False,
        description="also upsampled_{i}.png, each image_{i}.png through DeepFloyd IF stage II (with the job's "
        "prompt, or none), for models that have one",
    )


class Solving(BaseModel):
    """The solver a loop runs (docs/api.md, "Samplers"; core/samplers.py) and its options."""

    sampler: Sampler | None = Field(
        default=None,
        description="the solver (docs/api.md, 'Samplers'; GET /v1/models lists each model's with their good step "
        "counts); eps models (mnist-ddpm, DeepFloyd IF): ddpm, ddim, dpmpp_2m, dpmpp_sde, unipc, euler, heun; flow "
        "models: euler, heun, midpoint, ab2; omitted: the model's (ddpm, or euler for flow models)",
    )
    eta: Annotated[float, Field(ge=0, le=1)] | None = Field(
        default=None, description="ddim only: the noise each step adds back, 0 (deterministic, the default) to 1"
    )
    spacing: Spacing | None = Field(
        default=None,
        description="eps samplers with discrete timesteps (ddpm, ddim, dpmpp_2m, dpmpp_sde, unipc): how `steps` "
        "timesteps are picked (diffusers' timestep_spacing); omitted: ddpm as before (`steps` evenly spaced, or "
        "every `stride`-th), trailing for the rest",
    )

    @property
    def runs_solver(self) -> bool:
        """Whether the job's loop runs a solver (not denoising's blur nor its one step)."""
        return True


class Stepping(Solving):
    """How a loop steps: its solver (`sampler`), the times it visits (every `stride`-th timestep (DDPM), or `steps` of
    them; omitted: the model's), and whether each step's clean estimate is clipped to the model's value range."""

    steps: Annotated[int, Field(ge=1, le=1000)] | None = None
    stride: Annotated[int, Field(ge=1, le=1000)] | None = None
    clip_denoised: bool = Field(
        default=False,
        description="clip each step's clean-image estimate to the model's value range before stepping "
        "(guided-diffusion's clip_denoised); omitted: the spec's unclipped loop",
    )

    @model_validator(mode="after")
    def _one_schedule(self) -> Self:
        if self.steps is not None and self.stride is not None:
            raise ValueError("give at most one of `steps` or `stride`")
        return self


NoiseLevel = Annotated[float, Field(ge=0, le=1e6, allow_inf_nan=False)]


class Guidance(BaseModel):
    """How strongly, and where in the run, the generating kinds apply classifier-free guidance."""

    guidance_scale: Annotated[float, Field(ge=0, le=50)] | None = Field(
        default=None, description="CFG gamma; omitted: the model's default (5 for the MNIST models)"
    )
    guidance_interval: Annotated[list[NoiseLevel], Field(min_length=2, max_length=2)] | None = Field(
        default=None,
        description="[lo, hi]: guide only at noise levels sigma in this interval (sigma: the state is data + sigma "
        "noise, at the data's scale), the conditional estimate alone elsewhere; omitted: guide at every step",
    )

    @field_validator("guidance_interval")
    @classmethod
    def _ordered(cls, value: list[float] | None) -> list[float] | None:
        if value is not None and value[0] >= value[1]:
            raise ValueError("`guidance_interval` must be [lo, hi] with lo < hi")
        return value


class Conditioned(Guidance):
    """Conditioning shared by the generating kinds: a prompt (a class name for the in-house models), or a class."""

    prompt: str | None = Field(default=None, max_length=500, description="text for DeepFloyd IF; a class name here")
    class_label: Annotated[int, Field(ge=0)] | None = None

    @model_validator(mode="after")
    def _one_condition(self) -> Self:
        if self.prompt is not None and self.class_label is not None:
            raise ValueError("give at most one of `prompt` or `class_label`")
        return self


Count = Annotated[int, Field(ge=1, le=64, description="how many images")]


R = TypeVar("R", bound=JobBase)
# The models a capability runs on: "any" listed model (no network), the single-step "denoiser", "diffusion" models,
# diffusion models with "classes" (prompts to combine), and models with a "stage2" (DeepFloyd IF's upsampler).
Family = Literal["any", "denoiser", "diffusion", "classes", "stage2"]
Loc = list[str | int]  # where in the request a 422 points


@dataclass(frozen=True)
class Admitted(Generic[R]):
    """A request as the door admitted it and a worker runs it: validated, the model's defaults filled in, its seed
    drawn (the API draws one when the request has none: service/jobs.py)."""

    req: R
    seed: int


@dataclass(frozen=True)
class Door:
    """What a kind's rules at the door may consult: Redis, the caller, the deployment's settings."""

    conn: redis.Redis
    owner: str
    settings: Settings


@dataclass(frozen=True)
class Kind(Generic[R]):
    """A job kind as the registry knows it. The shared rules of service/admission.py run first (limits, the model
    and its capabilities, the model's defaults, classes and prompts, image inputs are valid); then the kind's own."""

    name: str  # the request's `kind`
    schema: type[R]  # its request: a JobBase with `kind: Literal[name]`
    capabilities: Mapping[str, frozenset[Family]]  # `kind` or `kind.method` -> the models that run it
    check: Callable[[R, ModelSpec, Door], None] | None = None  # its own rules, after the shared ones
    fill: Callable[[R, ModelSpec], None] | None = None  # the model's defaults that the shared ones must not set first
    route: Callable[[R, Door], str] | None = None  # a kind that runs on no model (train): its rules, then its queue
    example: dict[str, Any] | None = None  # a request the shipped models run in seconds (OpenAPI's example)


def check_timesteps(spec: ModelSpec, timesteps: list[tuple[Loc, int]]) -> None:
    """Timesteps exist only in a DDPM schedule, and only below its length."""
    if not timesteps:
        return
    if spec.schedule["type"] != "ddpm":
        raise InvalidRequest.field(timesteps[0][0][:1], f"{spec.id} is a flow-matching model; use sigmas")
    limit = int(spec.schedule["num_timesteps"])
    for loc, t in timesteps:
        if t >= limit:
            raise InvalidRequest.field(loc, f"must be below {limit}, the length of {spec.id}'s schedule")


def check_starts(spec: ModelSpec, req: Stepping, starts: list[tuple[Loc, int]]) -> None:
    """Every `i_start` lies inside the run it indexes."""
    count = spec.num_times(req.steps, req.stride, req.sampler)
    for loc, i_start in starts:
        if i_start >= count - 1:
            raise InvalidRequest.field(loc, f"must be below {count - 1}, the number of steps of this run")
