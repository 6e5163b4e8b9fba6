"""The job kinds of API.md as one discriminated union on `kind`; defaults filled in here are what `params` shows."""

from typing import Annotated, Any, Literal, Self

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    HttpUrl,
    TypeAdapter,
    ValidationInfo,
    field_validator,
    model_validator,
)

from core.schemas.images import ImageInput

MAX_LIST = 64
Seed = Annotated[int, Field(ge=0, le=2**63 - 1)]
WebhookEvent = Literal["start", "progress", "completed"]


class JobBase(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    kind: str
    model: str = Field(max_length=64, description="a model id from GET /v1/models")
    seed: Seed | None = Field(default=None, description="the same seed gives the same pixels; omitted: drawn")
    webhook: HttpUrl | None = Field(
        default=None, description="an http(s) URL the service POSTs the Job to, signed (README, 'Webhooks')"
    )
    webhook_events: list[WebhookEvent] | None = Field(
        default=None,
        validate_default=True,
        min_length=1,
        max_length=3,
        description="when to POST to `webhook`: start, progress (at most once a second), completed (the default)",
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

    def image_inputs(self) -> dict[str, ImageInput]:
        """The request's image inputs by field name, for checks at the door and resolution in the worker."""
        return {name: value for name, value in self if isinstance(value, ImageInput)}


class Upsampled(BaseModel):
    """Any image-making kind on DeepFloyd IF may add the 256 px version of each image_{i}.png (stage II)."""

    upsample: bool = Field(
        default=False,
        description="also upsampled_{i}.png, each image_{i}.png through DeepFloyd IF stage II (with the job's "
        "prompt, or none), for models that have one",
    )


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


class Schedule(BaseModel):
    """How a loop steps: the times it visits (every `stride`-th timestep (DDPM), or `steps` of them; omitted: the
    model's), and whether each step's clean estimate is clipped to the model's value range."""

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


class DenoiseJob(Schedule, Upsampled, JobBase):
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


class SampleJob(Conditioned, Schedule, Upsampled, JobBase):
    """Sampling from pure noise, with classifier-free guidance (CS180 A 1.5, 1.6, B 2.3, 2.6)."""

    kind: Literal["sample"]
    n: Count = 4
    frames: bool = Field(default=False, description="add frames.gif, the denoising process")


class Img2ImgJob(Conditioned, Schedule, Upsampled, JobBase):
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


class InpaintJob(Conditioned, Schedule, Upsampled, JobBase):
    """Regenerate the masked region only (CS180 A 1.7.2); mask white = regenerate, black = keep."""

    kind: Literal["inpaint"]
    image: ImageInput
    mask: ImageInput
    n: Count = 1


class AnagramJob(Guidance, Schedule, Upsampled, JobBase):
    """A visual anagram (CS180 A 1.8): the first prompt upright, the second under `view`."""

    kind: Literal["anagram"]
    prompts: list[Annotated[str, Field(max_length=500)]] = Field(min_length=2, max_length=2)
    view: Literal["flip", "rotate_180", "negate"] = "flip"
    n: Count = 1


class HybridJob(Guidance, Schedule, Upsampled, JobBase):
    """A hybrid image (CS180 A 1.9): low frequencies of the first prompt, high of the second."""

    kind: Literal["hybrid"]
    prompts: list[Annotated[str, Field(max_length=500)]] = Field(min_length=2, max_length=2)
    kernel_size: Annotated[int, Field(ge=1, le=65)] = 33
    sigma: Annotated[float, Field(gt=0, le=32)] = 2.0
    n: Count = 1

    @model_validator(mode="after")
    def _odd_kernel(self) -> Self:
        if self.kernel_size % 2 == 0:
            raise ValueError("`kernel_size` must be odd")
        return self


class UpsampleJob(Conditioned, JobBase):
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


MODEL_NAME = r"^[a-z0-9][a-z0-9-]{1,40}$"
FOLDER_PREFIX = "folder:"
MAX_EPOCHS = 500
MAX_TRAIN_ITEMS = 1_000_000
SAMPLE_EPOCHS = (1, 5, 10, 20)
# The specs' defaults per objective (CS180 part B): D, batch size, Adam's rate, epochs.
TRAIN_DEFAULTS: dict[str, dict[str, Any]] = {
    "denoiser": {"hidden": 128, "batch_size": 256, "lr": 1e-4, "epochs": 5},  # B 1.2.1
    "ddpm": {"hidden": 64, "batch_size": 128, "lr": 1e-3, "epochs": 20},  # DDPM spec B 2.2
    "flow": {"hidden": 64, "batch_size": 64, "lr": 1e-2, "epochs": 10},  # flow matching spec B 2.2, 2.5
}


DDPM_ONLY = {  # train fields only a DDPM may move from their default, and the rule that says so
    "schedule": "only ddpm has a beta schedule",
    "loss_weight": "only ddpm weighs its timesteps",
}


class TrainJob(JobBase):
    """Training (CS180 part B 1, B 2): the result is a new model of the caller's, named `name`, that every sampling
    kind can use. Defaults that depend on the objective are the specs' (TRAIN_DEFAULTS) and are shown in `params`.
    A rule that involves two fields is reported on the later one, so every 422 names a field."""

    kind: Literal["train"]
    model: str = Field(default="", max_length=64, description="the model this job makes: leave out, or equal `name`")
    name: str = Field(pattern=MODEL_NAME, description="the id of the model it makes (yours; a clash answers 409)")
    dataset: str = Field(max_length=200, description="mnist-5k, mnist, fashion-mnist or folder:<name> (DATA_DIR)")
    objective: Literal["denoiser", "ddpm", "flow"]
    conditioning: Literal["none", "time", "class"] | None = Field(
        default=None, validate_default=True, description="denoiser: none; ddpm and flow: time or class (the default)"
    )
    p_uncond: Annotated[float, Field(ge=0, le=1)] = Field(default=0.1, description="class: label drop rate (CFG)")
    epochs: Annotated[int, Field(ge=1, le=MAX_EPOCHS)] | None = Field(default=None, validate_default=True)
    batch_size: Annotated[int, Field(ge=1, le=4096)] | None = Field(default=None, validate_default=True)
    lr: Annotated[float, Field(gt=0, le=1e9)] | None = Field(
        default=None, validate_default=True, description="Adam's initial rate"
    )
    hidden: Annotated[int, Field(ge=1, le=512)] | None = Field(
        default=None, validate_default=True, description="D, the UNet's width"
    )
    sigma: Annotated[float, Field(gt=0, le=10)] | None = Field(
        default=None, validate_default=True, description="denoiser: z = x + sigma eps (0.5)"
    )
    ema_decay: Annotated[float, Field(ge=0, lt=1)] = 0.999
    grad_clip: Annotated[float, Field(ge=0, le=1e6)] = Field(default=1.0, description="max gradient norm; 0: none")
    sample_epochs: list[Annotated[int, Field(ge=1, le=MAX_EPOCHS)]] | None = Field(
        default=None,
        validate_default=True,
        max_length=MAX_LIST,
        description="when to draw epoch_{k}.png; default 1, 5, 10, 20 (those within epochs) and the last",
    )
    sample_steps: Annotated[int, Field(ge=1, le=1000)] | None = Field(
        default=None, description="steps of the epoch figures' sampling (default: DDPM every one of T, flow 50)"
    )
    image_size: Annotated[int, Field(ge=8, le=128)] | None = Field(
        default=None, validate_default=True, description="folder datasets: the side images are resized to (32)"
    )
    arch: Literal["cs180", "unet2d"] | None = Field(
        default=None,
        validate_default=True,
        description="cs180: the spec's UNet (default); unet2d: diffusers' UNet2DModel (default for folders)",
    )
    schedule: Literal["linear", "cosine"] = Field(
        default="linear", validate_default=True, description="ddpm: the beta schedule"
    )
    loss: Literal["l2", "l1"] = "l2"
    loss_weight: Literal["uniform", "v", "min-snr"] = Field(
        default="uniform",
        validate_default=True,
        description="ddpm: each timestep's weight in the noise loss: uniform (the spec), v (1 / abar_t, as a "
        "v-prediction or flow matching loss weighs it) or min-snr (min(SNR, 5) / SNR)",
    )
    precision: Literal["auto", "fp32", "bf16"] = Field(
        default="auto",
        description="auto: bfloat16 autocast where the worker's device has native bf16 (CUDA, CPUs with AMX or "
        "AVX512-BF16), else float32; the weights, optimizer and loss stay float32",
    )
    limit: Annotated[int, Field(ge=1, le=MAX_TRAIN_ITEMS)] | None = Field(
        default=None, description="train on this many items, evenly spaced through the dataset (default: all)"
    )

    @field_validator("conditioning")
    @classmethod
    def _conditioning(cls, value: str | None, info: ValidationInfo) -> str | None:
        objective = info.data.get("objective")
        if objective is None:
            return value
        if value is None:
            return "none" if objective == "denoiser" else "class"
        if (objective == "denoiser") != (value == "none"):
            raise ValueError("the denoiser takes `none`; ddpm and flow take `time` or `class`")
        return value

    @field_validator("epochs", "batch_size", "lr", "hidden")
    @classmethod
    def _spec_default(cls, value: float | None, info: ValidationInfo) -> float | None:
        objective = info.data.get("objective")
        if value is None and objective is not None and info.field_name is not None:
            default: float = TRAIN_DEFAULTS[objective][info.field_name]
            return default
        return value

    @field_validator("sigma")
    @classmethod
    def _sigma(cls, value: float | None, info: ValidationInfo) -> float | None:
        objective = info.data.get("objective")
        if value is not None and objective not in (None, "denoiser"):
            raise ValueError("only the denoiser is trained at one noise level")
        return 0.5 if value is None and objective == "denoiser" else value

    @field_validator("sample_epochs")
    @classmethod
    def _sample_epochs(cls, value: list[int] | None, info: ValidationInfo) -> list[int] | None:
        epochs = info.data.get("epochs")
        if epochs is None:
            return value
        if value is None:
            return sorted({e for e in SAMPLE_EPOCHS if e <= epochs} | {epochs})
        if any(e > epochs for e in value):
            raise ValueError(f"each must be at most epochs ({epochs})")
        return sorted(set(value))

    @field_validator("image_size")
    @classmethod
    def _image_size(cls, value: int | None, info: ValidationInfo) -> int | None:
        dataset = info.data.get("dataset")
        if dataset is None:
            return value
        if not dataset.startswith(FOLDER_PREFIX):
            if value not in (None, 28):
                raise ValueError("only folder datasets are resized; the others are 28 x 28")
            return None
        return 32 if value is None else value

    @field_validator("arch")
    @classmethod
    def _arch(cls, value: str | None, info: ValidationInfo) -> str | None:
        dataset, hidden, size = info.data.get("dataset"), info.data.get("hidden"), info.data.get("image_size") or 28
        if value is None and dataset is not None:
            value = "unet2d" if dataset.startswith(FOLDER_PREFIX) else "cs180"
        if value == "cs180" and size % 4:
            raise ValueError(f"the cs180 UNet needs an image_size divisible by 4, got {size}")
        if value == "unet2d" and (size % 2 or (hidden is not None and hidden % 8)):
            raise ValueError(f"unet2d needs hidden a multiple of 8 and an even image_size, got {hidden} and {size}")
        return value

    @field_validator("schedule", "loss_weight")
    @classmethod
    def _ddpm_only(cls, value: str, info: ValidationInfo) -> str:
        name = info.field_name or ""
        if value != cls.model_fields[name].default and info.data.get("objective") not in (None, "ddpm"):
            raise ValueError(DDPM_ONLY[name])
        return value

    @model_validator(mode="after")
    def _model_is_name(self) -> Self:
        if self.model and self.model != self.name:
            raise ValueError("`model` of a train job is the model it makes: leave it out or give `name`")
        self.model = self.name
        return self

    @property
    def num_epochs(self) -> int:
        assert self.epochs is not None, "filled in by validation"
        return self.epochs


AnyJob = NoiseJob | DenoiseJob | SampleJob | Img2ImgJob | InpaintJob | AnagramJob | HybridJob | UpsampleJob | TrainJob
JobRequest = Annotated[AnyJob, Field(discriminator="kind")]
JOB_REQUEST: TypeAdapter[AnyJob] = TypeAdapter(JobRequest)
# Requests the shipped models run in seconds: the OpenAPI schema's examples (and schemathesis's first cases).
EXAMPLES: dict[str, dict[str, Any]] = {
    "sample": {"kind": "sample", "model": "mnist-ddpm", "class_label": 7, "n": 2, "steps": 10, "seed": 0},
    "noise": {
        "kind": "noise",
        "model": "mnist-ddpm",
        "image": {"dataset": "mnist-5k", "index": 12},
        "timesteps": [50, 250],
    },
    "denoise": {
        "kind": "denoise",
        "model": "mnist-denoiser",
        "image": {"dataset": "mnist-5k", "index": 3},
        "method": "one_step",
        "sigma": 0.5,
    },
}
KINDS = ("noise", "denoise", "sample", "img2img", "inpaint", "anagram", "hybrid", "upsample", "train")


def parse_job(data: object) -> AnyJob:
    """Validates a job payload: at the door, and again in the worker for what it dequeues."""
    return JOB_REQUEST.validate_python(data)
