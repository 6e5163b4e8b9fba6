"""Response bodies of docs/api.md: Job, its parts, lists, uploads, models and the error envelope."""

from typing import Any, Literal

from pydantic import BaseModel

Status = Literal["queued", "running", "succeeded", "failed", "canceled"]
TERMINAL: frozenset[str] = frozenset({"succeeded", "failed", "canceled"})


class Progress(BaseModel):
    stage: str
    step: int
    total: int
    fraction: float
    # Training adds these (`step` and `total` then count optimizer steps over the whole run).
    epoch: int | None = None  # the epoch in progress, from 1
    epochs: int | None = None
    epochs_done: int | None = None  # epochs whose checkpoint and state are saved: a retry goes on after them
    loss: float | None = None  # the last batch's
    images_per_second: float | None = None
    eta_seconds: float | None = None  # estimated time left to the last step


class Artifact(BaseModel):
    name: str
    media_type: str
    bytes: int
    url: str


class JobError(BaseModel):
    type: str
    message: str


class Job(BaseModel):
    id: str
    kind: str
    status: Status
    model: str
    created_at: str
    started_at: str | None
    finished_at: str | None
    queue_position: int | None
    progress: Progress | None
    params: dict[str, Any]
    artifacts: list[Artifact]
    result: dict[str, Any] | None
    error: JobError | None
    attempts: int


class JobList(BaseModel):
    jobs: list[Job]
    next_cursor: str | None


class Upload(BaseModel):
    id: str
    media_type: str
    width: int
    height: int
    bytes: int


class Model(BaseModel):
    id: str
    description: str
    queue: str
    image_size: int
    channels: int
    value_range: list[float]
    schedule: dict[str, Any]
    capabilities: list[str]
    available: bool
    reason: str | None
    classes: list[str]
    defaults: dict[str, Any]
    shipped: bool
    training: dict[str, Any] | None = None
    quality: dict[str, Any] | None = None
    size_bytes: int | None = None
    objective: str | None = None  # "denoiser", "ddpm" or "flow"
    text: bool = False  # prompts are free text (DeepFloyd IF), not class names
    stage1: dict[str, Any] | None = None  # DeepFloyd IF: where each stage comes from; stage II's availability
    stage2: dict[str, Any] | None = None
    prompts: list[str] | None = None  # DeepFloyd IF on precomputed embeddings: the only prompts it serves
    # Trained models (`shipped: false`) add these.
    dataset: str | None = None
    conditioning: str | None = None
    arch: str | None = None
    created_at: str | None = None
    job_id: str | None = None  # the train job that made it
    training_seconds: float | None = None
    metrics: dict[str, Any] | None = None


class ModelList(BaseModel):
    models: list[Model]


class ErrorDetail(BaseModel):
    type: str
    message: str
    details: list[dict[str, Any]]


class ErrorBody(BaseModel):
    """The one error envelope of docs/api.md, for every status that is not a success."""

    error: ErrorDetail
