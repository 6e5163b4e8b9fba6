"""`train`: training a model (CS180 part B 1, B 2); the result is a new model of the caller's."""

from typing import Annotated, Any, Literal, Self

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator, model_validator

from core.errors import InvalidRequest
from core.kinds.base import MAX_LIST, Door, JobBase, Kind
from core.model_spec import ModelSpec
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


# A distillation's defaults per method: batch size, Adam's rate (a fine-tuning's, from the teacher's weights), epochs
# (progressive: per round), and the teacher's steps (reflow: Euler; progressive: DDIM, `steps` times a power of 2).
DISTILL_DEFAULTS: dict[str, dict[str, Any]] = {
    "reflow": {"batch_size": 128, "lr": 1e-3, "epochs": 10, "teacher_steps": 50, "pairs": 4096},
    "progressive": {"batch_size": 128, "lr": 1e-4, "epochs": 2},
}
DISTILL_OBJECTIVE = {"reflow": "flow", "progressive": "ddpm"}  # what each method's student predicts
PROGRESSIVE_TEACHER_STEPS = 64  # progressive's default first teacher: the smallest steps 2^k at or above this
NOT_DISTILLED = {  # fields a distillation takes from its teacher or its method, and the rule that says so
    "hidden": "a distilled model has its teacher's network",
    "arch": "a distilled model has its teacher's network",
    "sigma": "only the denoiser is trained at one noise level",
    "image_size": "a distilled model has its teacher's image size",
    "sample_steps": "a distilled model's figures are drawn at distill.steps",
}


class Distill(BaseModel):
    """Distillation (docs/training.md, "Distillation"): the job trains a few-step student of `teacher`, the
    teacher's guidance baked in, instead of a model from data."""

    model_config = ConfigDict(extra="forbid")

    teacher: str = Field(max_length=64, description="the model distilled: shipped, or one of yours")
    method: Literal["reflow", "progressive"] = Field(
        description="reflow: flow teachers (rectified flow on the teacher's pairs); progressive: eps (ddpm) teachers "
        "(halving DDIM's steps per round)"
    )
    steps: Annotated[int, Field(ge=1, le=1000)] = Field(description="the student's steps, its served default")
    teacher_steps: Annotated[int, Field(ge=1, le=1000)] | None = Field(
        default=None,
        validate_default=True,
        description="reflow: the teacher's Euler steps per pair (50); progressive: the first teacher's DDIM steps, "
        f"steps times a power of two (default: the first at or above {PROGRESSIVE_TEACHER_STEPS})",
    )
    guidance_scale: Annotated[float, Field(ge=0, le=100)] | None = Field(
        default=None, description="the teacher's CFG on class rows, baked into the student (default: the teacher's)"
    )
    pairs: Annotated[int, Field(ge=1, le=100_000)] | None = Field(
        default=None, validate_default=True, description="reflow: how many (noise, teacher's image) pairs (4096)"
    )

    @field_validator("teacher_steps")
    @classmethod
    def _teacher_steps(cls, value: int | None, info: ValidationInfo) -> int | None:
        method, steps = info.data.get("method"), info.data.get("steps")
        if method is None or steps is None:
            return value
        if method == "reflow":
            return DISTILL_DEFAULTS["reflow"]["teacher_steps"] if value is None else value
        if value is None:
            value = steps * 2
            while value < PROGRESSIVE_TEACHER_STEPS:
                value *= 2
        k = value // steps
        if value % steps or k < 2 or k & (k - 1):
            raise ValueError(f"progressive halves the steps per round: must be steps ({steps}) times 2, 4, 8, ...")
        return value

    @property
    def rounds(self) -> int:
        """Progressive: the halvings from teacher_steps to steps (the run's epochs are `epochs` per round); 1 else."""
        if self.method != "progressive" or self.teacher_steps is None:
            return 1
        return (self.teacher_steps // self.steps).bit_length() - 1

    @field_validator("pairs")
    @classmethod
    def _pairs(cls, value: int | None, info: ValidationInfo) -> int | None:
        method = info.data.get("method")
        if method == "progressive" and value is not None:
            raise ValueError("only reflow draws pairs; progressive noises the dataset's images")
        return DISTILL_DEFAULTS["reflow"]["pairs"] if value is None and method == "reflow" else value


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
    distill: Distill | None = Field(default=None, description="distil a teacher instead (docs/training.md)")
    dataset: str | None = Field(
        default=None,
        validate_default=True,
        max_length=200,
        description="mnist-5k, mnist, fashion-mnist or folder:<name> (DATA_DIR); a reflow distillation takes none",
    )
    objective: Literal["denoiser", "ddpm", "flow"] | None = Field(
        default=None, validate_default=True, description="required; a distillation's is its method's (flow, ddpm)"
    )
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
        description="when to draw epoch_{k}.png; default 1, 5, 10, 20 (those within epochs) and the last; a "
        "progressive distillation's count the run's epochs (epochs per round times its rounds)",
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

    @field_validator("dataset")
    @classmethod
    def _dataset(cls, value: str | None, info: ValidationInfo) -> str | None:
        if "distill" not in info.data:  # `distill` is invalid (its own error says why): no rule follows from it
            return value
        distill: Distill | None = info.data["distill"]
        if distill is not None and distill.method == "reflow":
            if value is not None:
                raise ValueError("reflow draws its pairs from noise and the teacher: leave out dataset")
            return None
        if value is None:
            raise ValueError("required" + (" by progressive distillation: it noises real images" if distill else ""))
        return value

    @field_validator("objective")
    @classmethod
    def _objective(cls, value: str | None, info: ValidationInfo) -> str | None:
        if "distill" not in info.data:
            return value
        distill: Distill | None = info.data["distill"]
        if distill is None:
            if value is None:
                raise ValueError("required: denoiser, ddpm or flow")
            return value
        wanted = DISTILL_OBJECTIVE[distill.method]
        if value not in (None, wanted):
            raise ValueError(f"a {distill.method} student is a {wanted} model: leave out objective or give {wanted}")
        return wanted

    @field_validator(*NOT_DISTILLED, mode="before")
    @classmethod
    def _not_distilled(cls, value: Any, info: ValidationInfo) -> Any:
        if value is not None and info.data.get("distill") is not None and info.field_name is not None:
            raise ValueError(NOT_DISTILLED[info.field_name])
        return value

    @field_validator("conditioning")
    @classmethod
    def _conditioning(cls, value: str | None, info: ValidationInfo) -> str | None:
        objective = info.data.get("objective")
        if objective is None or info.data.get("distill") is not None:  # a distillation's: its teacher's (`route`)
            return value
        if value is None:
            return "none" if objective == "denoiser" else "class"
        if (objective == "denoiser") != (value == "none"):
            raise ValueError("the denoiser takes `none`; ddpm and flow take `time` or `class`")
        return value

    @field_validator("epochs", "batch_size", "lr", "hidden")
    @classmethod
    def _spec_default(cls, value: float | None, info: ValidationInfo) -> float | None:
        objective, distill = info.data.get("objective"), info.data.get("distill")
        if distill is not None and info.field_name is not None:
            return DISTILL_DEFAULTS[distill.method].get(info.field_name) if value is None else value
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
        distill: Distill | None = info.data.get("distill")
        epochs *= distill.rounds if distill is not None else 1  # the run's epochs: progressive's are per round
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
        if info.data.get("distill") is not None:
            return value
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
        if value != cls.model_fields[name].default and info.data.get("distill") is not None:
            raise ValueError("a distilled model has its teacher's schedule and the distillation's loss")
        return value

    @model_validator(mode="after")
    def _model_is_name(self) -> Self:
        if self.model and self.model != self.name:
            raise ValueError("`model` of a train job is the model it makes: leave it out or give `name`")
        self.model = self.name
        return self

    @field_validator("limit")
    @classmethod
    def _limit(cls, value: int | None, info: ValidationInfo) -> int | None:
        distill: Distill | None = info.data.get("distill")
        if value is not None and distill is not None and distill.method == "reflow":
            raise ValueError("reflow's training set is its pairs: use distill.pairs")
        return value

    @property
    def num_epochs(self) -> int:
        """The run's epochs: `epochs`, times the rounds of a progressive distillation."""
        assert self.epochs is not None, "filled in by validation"
        return self.epochs * (self.distill.rounds if self.distill is not None else 1)

    @property
    def objective_name(self) -> Literal["denoiser", "ddpm", "flow"]:
        assert self.objective is not None, "filled in by validation"
        return self.objective


def teacher_spec(teacher: str, door: Door) -> ModelSpec | None:
    """The teacher as the caller sees it: a shipped model, or one of the caller's; None for any other name."""
    from core.catalog import builtin_models  # here: the catalog imports the kinds (core/kinds/__init__.py)
    from core.model_registry import ModelRegistry  # which imports the catalog

    shipped = builtin_models(door.settings)
    return shipped[teacher] if teacher in shipped else ModelRegistry(door.conn).spec(door.owner, teacher)


def check_distill(req: TrainJob, distill: Distill, door: Door) -> ModelSpec:
    """The teacher exists for the caller, can run, is an in-house UNet of the method's kind; fills the student's
    conditioning and the teacher's guidance from it. Returns the teacher."""
    loc: list[str | int] = ["distill", "teacher"]
    spec = teacher_spec(distill.teacher, door)
    if spec is None:
        raise InvalidRequest.field(loc, f"no model {distill.teacher!r} is shipped or yours (GET /v1/models)")
    if spec.text or (spec.checkpoint is None and spec.checkpoint_key is None):
        reason = spec.reason or "it is not an in-house UNet"
        raise InvalidRequest.field(loc, f"{spec.id} cannot be distilled here: {reason}")
    wanted = DISTILL_OBJECTIVE[distill.method]
    if spec.objective != wanted:
        other = {o: m for m, o in DISTILL_OBJECTIVE.items()}.get(spec.objective)
        hint = f"; use {other}" if other else ""
        raise InvalidRequest.field(
            ["distill", "method"],
            f"{distill.method} distils {wanted} models; {spec.id} is a {spec.objective} model{hint}",
        )
    if distill.method == "progressive":
        T = int(spec.schedule["num_timesteps"])
        assert distill.teacher_steps is not None, "filled in by validation"
        if distill.teacher_steps > T:
            raise InvalidRequest.field(["distill", "teacher_steps"], f"must be at most {T}, {spec.id}'s timesteps")
    conditioning: Literal["time", "class"] = "class" if spec.classes else "time"
    if req.conditioning not in (None, conditioning):
        raise InvalidRequest.field(["conditioning"], f"a distilled model has its teacher's: {conditioning}")
    req.conditioning = conditioning
    if distill.guidance_scale is None:
        distill.guidance_scale = float(spec.defaults.get("guidance_scale", 1.0)) if spec.classes else 1.0
    elif distill.guidance_scale != 1.0 and not spec.classes:
        raise InvalidRequest.field(["distill", "guidance_scale"], f"{spec.id} has no classes to guide toward: use 1")
    return spec


def check_distill_data(req: TrainJob, info: dict[str, Any], spec: ModelSpec) -> None:
    """Progressive's images are the teacher's kind: its channels and size, and labels of its classes."""
    size = info["image_size"] or 32  # a folder's images are resized to 32
    if (info["channels"], size) != (spec.channels, spec.image_size):
        raise InvalidRequest.field(
            ["dataset"],
            f"{req.dataset} has {info['channels']}-channel {size} px images; {spec.id} takes "
            f"{spec.channels}-channel {spec.image_size} px",
        )
    if spec.classes and len(info["class_names"]) != len(spec.classes):
        raise InvalidRequest.field(
            ["dataset"], f"{req.dataset} has {len(info['class_names'])} classes; {spec.id} has {len(spec.classes)}"
        )


def route(req: TrainJob, door: Door) -> str:
    """The dataset exists here and fits the job (from file headers and listings; nothing is decoded); a
    distillation's teacher is the caller's to use."""
    teacher = check_distill(req, req.distill, door) if req.distill is not None else None
    if req.dataset is None:
        return TRAIN_QUEUE
    try:
        info = dataset_info(req.dataset, door.settings.data_dir)
    except DatasetError as exc:
        raise InvalidRequest.field(["dataset"], str(exc)) from exc
    if not info["available"]:
        raise InvalidRequest.field(["dataset"], f"not available on this deployment: {info['reason']}")
    if teacher is not None:
        check_distill_data(req, info, teacher)
    if req.conditioning == "class" and not info["class_names"]:
        raise InvalidRequest.field(
            ["conditioning"], f"{req.dataset} has no classes (a folder of class subfolders has); use `time`"
        )
    if req.limit is not None and info["size"] is not None and req.limit > info["size"]:
        raise InvalidRequest.field(["limit"], f"must be at most {info['size']}, the size of {req.dataset}")
    return TRAIN_QUEUE


KIND = Kind("train", TrainJob, {}, route=route)
