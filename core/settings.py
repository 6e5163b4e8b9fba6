"""Every setting of the service and its workers, read from the environment (docs/api.md, "Configuration")."""

from functools import lru_cache
from pathlib import Path
from typing import Literal

from limits import parse
from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from core.images import ImageLimits

TIMEOUT_MAX_S = {"noise": 600, "denoise": 1800, "train": 7 * 24 * 3600}  # the bounds of kinds unlike the default


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="", extra="ignore")

    # Where state lives.
    redis_url: str | None = None  # unset: `up` starts the embedded Redis and sets this for its children
    var_dir: Path = Path("var")  # embedded Redis data, logs, the filesystem artifact backend by default
    data_dir: Path = Path("var/data")  # datasets: mnist/, fashion-mnist/, image folders
    models_dir: Path = Path("var/models")  # local copies of trained models
    checkpoints_dir: Path | None = None  # the shipped models' checkpoints; default: the `models` package's
    # DeepFloyd IF (docs/deepfloyd.md): each stage a local folder or a hub id in the local HF cache.
    deepfloyd_stage1: str | None = None
    deepfloyd_stage2: str | None = None
    deepfloyd_prompt_embeds: Path | None = None  # a torch.save'd {prompt: (1, L, D) tensor}: no text encoder at all
    # The weights' file variant (the hub repos' fp16 files), loaded where a stage's folder has it, else its plain
    # weights with one log line (worker/deepfloyd.py); "" for the plain weights always.
    deepfloyd_variant: str | None = "fp16"
    deepfloyd_allow_download: bool = False  # fetch what the local cache lacks from the hub (needs HF_TOKEN)
    deepfloyd_cpu_offload: bool = False  # CUDA: keep each part on the CPU until it runs (accelerate; small GPUs)
    prompt_cache_ttl_s: int = 30 * 24 * 3600  # text embeddings in Redis, shared by every worker

    # The HTTP server.
    host: str = "127.0.0.1"
    port: int = 8000
    api_keys: str | None = None  # comma-separated; unset: no auth, loopback only
    api_workers: int = Field(default=1, ge=1, le=64)  # API processes (uvicorn workers) behind the one port
    # Keys (each also in API_KEYS) that reach /v1/admin (docs/operations/administration.md); with no API_KEYS the
    # loopback user is the admin.
    admin_keys: str = ""

    # Artifacts and uploads.
    artifact_backend: Literal["redis", "filesystem"] = "redis"
    artifact_dir: Path | None = None  # filesystem backend root; default var_dir / "artifacts"
    artifact_ttl_s: int = 24 * 3600  # artifacts, uploads and finished jobs live this long

    # Limits (docs/api.md: 413, 415, 422, 503).
    max_body_bytes: int = 16 * 1024 * 1024
    max_image_pixels: int = 4096 * 4096
    max_image_side: int = 8192
    # A deployment may lower the schema's own caps (docs/api.md: 422 naming the field).
    max_n: int = Field(default=64, ge=1, le=64)  # images per job
    max_steps: int = Field(default=1000, ge=1, le=1000)  # sampling steps a job may ask for
    max_epochs: int = Field(default=500, ge=1, le=500)
    max_batch_size: int = Field(default=4096, ge=1, le=4096)
    max_queue_depth: int = 10_000
    max_wait_s: float = 60.0  # `Prefer: wait` and `?wait=`
    max_group_jobs: int = Field(default=1000, ge=1, le=100_000)  # jobs in one POST /v1/groups (docs/api.md, "Groups")
    max_list_limit: int = 100
    rate_limit_writes: str = "600/minute"  # per key (docs/api.md: 429): POST and DELETE requests
    rate_limit_reads: str = "6000/minute"  # per key: every other request

    # Priorities, time limits and quotas (docs/operations/scaling.md, "Priorities"; docs/operations/quotas.md).
    high_priority_keys: str = ""  # comma-separated API keys that may submit priority "high"; "*": every key
    # The most seconds a job of each kind may run (its `timeout_s` may ask less); kinds not named: the default.
    # JSON in the environment, e.g. JOB_TIMEOUT_MAX_S='{"sample": 600}'; it is merged over these.
    job_timeout_max_s: dict[str, int] = Field(default_factory=dict)
    job_timeout_default_max_s: int = Field(default=3600, ge=1)
    max_active_jobs_per_key: int = Field(default=0, ge=0)  # queued plus running; 0: no limit
    daily_images_per_key: int = Field(default=0, ge=0)  # images asked for per UTC day; 0: no limit

    # Webhooks (docs/client.md, "Webhooks").
    webhook_secret: str | None = None  # the HMAC-SHA256 key of every POST's signature; unset: jobs may not ask one
    webhook_max_attempts: int = Field(default=6, ge=1, le=100)  # tries of one delivery before it is dropped
    webhook_timeout_s: float = Field(default=10.0, gt=0, le=300)  # one try's connect-to-response limit
    webhook_backoff_s: float = Field(default=2.0, gt=0, le=3600)  # the wait before the first retry; doubles each time

    # Workers.
    job_retries: int = 2  # attempts after the first, for causes that may pass (worker lost, CUDA OOM)
    heartbeat_ttl_s: int = 30  # a running job whose worker is silent this long is abandoned
    reaper_interval_s: float = 5.0  # how often abandoned jobs are looked for
    progress_interval_s: float = 0.25  # the fastest a job's progress is written to Redis
    preview_interval_s: float = Field(default=1.0, gt=0)  # the fastest a sampling job's preview PNG is made (a decode)
    # GET /v1/jobs/{id}/events: a `: keep-alive` comment after this long with nothing else sent (proxies drop idle ones)
    sse_keepalive_s: float = Field(default=15.0, gt=0)
    redis_timeout_s: float = 3.0  # connect and socket timeout; past it the API answers 503
    log_level: str = Field(default="INFO")
    log_format: Literal["json", "text"] = "json"  # json: one object per line (core/logs.py); text: for a terminal
    cuda_memory_fraction: float | None = Field(default=None, gt=0, le=1)  # a worker's cap on its GPU's memory
    # `up`: one worker per GPU and queue, each with its own CUDA_VISIBLE_DEVICES (docs/operations/scaling.md, "One
    # worker per GPU"): GPU indices "0,1,2,3", or "all" for every GPU `nvidia-smi -L` lists; "": one worker per queue.
    worker_gpus: str = ""
    # torch's threads in a sampling worker: on 2 shared cores with passive OpenMP waits, 1 was fastest at every batch
    # size measured (BENCHMARKS.md, "Cross-job batching"); a dedicated many-core CPU box may want more.
    inference_threads: int = Field(default=1, ge=1, le=256)
    # Cross-job batching (docs/operations/scaling.md, "Batching"): compatible queued `sample` jobs run as one loop,
    # at most MAX_N images.
    batch_max_jobs: int = Field(default=32, ge=1, le=256)  # 1: every job alone
    batch_wait_ms: float = Field(default=20.0, ge=0, le=5000)  # how long a batch waits to fill, once it has two
    # Job kinds of the deployment's own (docs/architecture.md, "Adding a job kind"): comma-separated packages, each
    # with a `kind` module (imported by the API and the workers) and a `runner` module (imported by the workers).
    extra_kinds: str = ""

    @field_validator(
        "deepfloyd_stage1", "deepfloyd_stage2", "deepfloyd_variant", "deepfloyd_prompt_embeds", mode="before"
    )
    @classmethod
    def _empty_is_none(cls, value: object) -> object:
        return None if value == "" else value

    @field_validator("rate_limit_writes", "rate_limit_reads")
    @classmethod
    def _a_rate(cls, value: str) -> str:
        parse(value)  # "N/second|minute|hour|day"; a ValueError names what it could not read
        return value

    @property
    def extra_kind_packages(self) -> list[str]:
        return [p.strip() for p in self.extra_kinds.split(",") if p.strip()]

    def timeout_bound_s(self, kind: str) -> int:
        """The most seconds a job of `kind` may run on this deployment."""
        bounds = {**TIMEOUT_MAX_S, **self.job_timeout_max_s}
        return bounds.get(kind, self.job_timeout_default_max_s)

    @property
    def high_priority_key_list(self) -> list[str]:
        return [k.strip() for k in self.high_priority_keys.split(",") if k.strip()]

    @property
    def admin_key_list(self) -> list[str]:
        return [k.strip() for k in self.admin_keys.split(",") if k.strip()]

    @property
    def key_list(self) -> list[str]:
        return [k.strip() for k in (self.api_keys or "").split(",") if k.strip()]

    @property
    def image_limits(self) -> ImageLimits:
        return ImageLimits(self.max_image_pixels, self.max_image_side)

    @property
    def artifact_root(self) -> Path:
        return self.artifact_dir or self.var_dir / "artifacts"


@lru_cache
def get_settings() -> Settings:
    return Settings()
