"""Response bodies of API.md: Job, its parts, lists, uploads, models and the error envelope."""

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
    """The one error envelope of API.md, for every status that is not a success."""

    error: ErrorDetail


RETRY_AFTER = {"Retry-After": {"description": "seconds to wait before retrying", "schema": {"type": "integer"}}}
ERRORS: dict[int, tuple[str, dict[str, Any]]] = {  # API.md, "Conventions": what each status means, its headers
    400: ("Malformed: the body is not what its media type says.", {}),
    401: ("No API key, or a wrong one.", {"WWW-Authenticate": {"schema": {"type": "string"}}}),
    404: ("Unknown, or not the caller's.", {}),
    409: ("A conflict, e.g. an Idempotency-Key reused with another body.", {}),
    413: ("The body or an image is too large.", {}),
    415: ("An unsupported media type, or bytes that are not what their type says.", {}),
    422: ("A well-formed request that breaks a rule; `details` names each field and the reason.", {}),
    429: ("Rate limited.", RETRY_AFTER),
    503: ("The queue is full, or Redis is unreachable.", RETRY_AFTER),
}
AUTHED = (401, 429, 503)  # every route that takes a key: refused without one, rate limited, needs Redis


def error_responses(*codes: int) -> dict[int | str, dict[str, Any]]:
    """The `responses=` of a route: the error envelope at each of `codes`, with the headers API.md promises."""
    return {
        code: {"model": ErrorBody, "description": ERRORS[code][0]}
        | ({"headers": {k: {**v, "required": True} for k, v in ERRORS[code][1].items()}} if ERRORS[code][1] else {})
        for code in sorted(set(codes))
    }
