"""Live previews of a sampling job: a small PNG grid of the clean images its current estimates imply.

The sampling loop offers each step's preview as a callable (`models.sampling.Step.preview`): computing it costs a
decode, so a `LazyPreview` computes it at most once per step, and only when some job's hook finds a preview due
(`StepHook.report`, at most every `preview_interval_s`). Jobs run as one batch share the step's `LazyPreview`, each
taking its own rows. The PNG lands in Redis beside the job (`keys.preview`), where GET /v1/jobs/{id}/events reads it.
"""

import time
from collections.abc import Callable, Mapping

import redis
import torch

from core import keys
from core.events import job_changed
from models.grid import make_grid
from models.imageio import encode_png


class LazyPreview:
    """One step's clean-image estimate in [0, 1], computed on first use; `rows`: each job's rows of the batch (a job
    not listed has them all)."""

    def __init__(self, compute: Callable[[], torch.Tensor], rows: Mapping[str, slice]) -> None:
        self._compute = compute
        self._rows = rows
        self._images: torch.Tensor | None = None

    def rows_of(self, job_id: str) -> torch.Tensor:
        """(n, C, H, W) in [0, 1]: the job's own rows."""
        if self._images is None:
            self._images = self._compute().clamp(0, 1)
        return self._images[self._rows.get(job_id, slice(None))]


def store_preview(
    conn: redis.Redis, job_id: str, stage: str, step: int, total: int, images: torch.Tensor, ttl_s: int
) -> None:
    """Stores `images` ((n, C, H, W) in [0, 1]) as the job's preview grid and tells the job's watchers, in one trip.

    `at` (nanoseconds) tells one preview from the next, even across a retried job's attempts."""
    png = encode_png(make_grid(images))
    fields = {"stage": stage, "step": step, "total": total, "png": png, "at": time.time_ns()}
    with conn.pipeline(transaction=False) as pipe:
        pipe.hset(keys.preview(job_id), mapping=fields)  # type: ignore[arg-type]
        pipe.expire(keys.preview(job_id), ttl_s)
        job_changed(pipe, job_id)
        pipe.execute()
