"""Response bodies of docs/api.md: Job, its parts, lists, uploads, models and the error envelope."""

from typing import Any, Literal

from pydantic import BaseModel, Field

Status = Literal["queued", "running", "succeeded", "failed", "canceled", "timed_out"]
# timed_out: the job ran past its `timeout_s` (an ending like failed, with its own reason; docs/api.md)
TERMINAL: frozenset[str] = frozenset({"succeeded", "failed", "canceled", "timed_out"})


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
    # seconds until it is likely to start: the jobs ahead of it (higher priorities first) times the mean run of its
    # kind and model, over the workers of its queue; None when not queued or nothing has run yet to measure
    queue_eta_seconds: float | None = None
    priority: str = "normal"
    group_id: str | None = None
    progress: Progress | None
    params: dict[str, Any]
    artifacts: list[Artifact]
    result: dict[str, Any] | None
    error: JobError | None
    attempts: int


class JobList(BaseModel):
    jobs: list[Job]
    next_cursor: str | None


class Group(BaseModel):
    """A job group (docs/api.md, "Groups"), counted from its members' own statuses."""

    id: str
    created_at: str
    total: int  # members
    counts: dict[str, int]  # members per job status, every status present (zeros too)
    expired: int = 0  # members whose record is gone (a job expires ARTIFACT_TTL_S after it ends)
    done: bool  # every member has ended
    status: Literal["running", "completed"]  # "completed" once done
    job_ids: list[str]
    webhook: str | None = None  # POSTed the group once every member has ended (event `group.completed`)


class Upload(BaseModel):
    id: str
    media_type: str
    width: int
    height: int
    bytes: int


class SamplerChoice(BaseModel):
    """A sampler the model's loops run (core/samplers.py; docs/api.md, "Samplers")."""

    name: str
    summary: str
    good_steps: list[int] = Field(description="[lo, hi]: the step counts it does well at (a hint, not a rule)")
    default_steps: int = Field(description="its steps when a job names it and gives neither steps nor stride")
    min_steps: int
    default: bool = Field(description="the model's sampler when a job names none")
    takes: list[str] = Field(description="which of eta, spacing, stride it takes")


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
    samplers: list[SamplerChoice] = []  # none for the single-step denoiser
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
    distilled_from: dict[str, Any] | None = None  # a distilled model: its teacher, method and steps
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


class Quota(BaseModel):
    used: int
    limit: int | None  # None: this deployment sets no limit
    resets_at: str | None = None  # a daily quota's next reset (UTC midnight)


class Usage(BaseModel):
    """GET /v1/usage (docs/operations/quotas.md)."""

    day: str  # the UTC day the daily figures count
    active_jobs: Quota  # queued plus running
    images_today: Quota
    gpu_seconds_today: float  # seconds this key's jobs ran on a worker today, attempts lost to a worker's death aside
