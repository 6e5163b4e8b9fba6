"""`train`: training a model (CS180 part B 1, B 2); the result is a new model of the caller's."""

from typing import Annotated, Any, Literal, Self

from pydantic import Field, ValidationInfo, field_validator, model_validator

from core.errors import InvalidRequest
from core.kinds.base import MAX_LIST, Door, JobBase, Kind
from core.queues import TRAIN_QUEUE
from models.datasets import DatasetError, dataset_info

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


def route(req: TrainJob, door: Door) -> str:
    """The dataset exists here and fits the job (from file headers and listings; nothing is decoded)."""
    try:
        info = dataset_info(req.dataset, door.settings.data_dir)
    except DatasetError as exc:
        raise InvalidRequest.field(["dataset"], str(exc)) from exc
    if not info["available"]:
        raise InvalidRequest.field(["dataset"], f"not available on this deployment: {info['reason']}")
    if req.conditioning == "class" and not info["class_names"]:
        raise InvalidRequest.field(
            ["conditioning"], f"{req.dataset} has no classes (a folder of class subfolders has); use `time`"
        )
    if req.limit is not None and info["size"] is not None and req.limit > info["size"]:
        raise InvalidRequest.field(["limit"], f"must be at most {info['size']}, the size of {req.dataset}")
    return TRAIN_QUEUE


KIND = Kind("train", TrainJob, {}, route=route)
