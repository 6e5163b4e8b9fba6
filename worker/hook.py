"""The step hook (docs/architecture.md, "The sampling loop"): progress, heartbeat and cancel, called once per
sampling step or training batch.

Cheap enough for every step: one EXISTS for the cancel flag; progress is written at most every
`progress_interval_s` (and at the last step), a sampling step's preview (worker/preview.py) at most every
`preview_interval_s`, the heartbeat at a third of its time-to-live. A batch of jobs run as
one loop (worker/batching.py) has one `BatchHook` over the jobs' own hooks: one round trip for every cancel flag.
"""

import time
from typing import Any, Protocol

import redis
from rq.job import Job as RQJob

from core import keys
from core.endings import record_endings
from core.events import job_changed
from core.job_state import now_iso
from core.outbox import PROGRESS_INTERVAL_S as WEBHOOK_PROGRESS_S
from core.outbox import announce
from core.settings import Settings
from worker import context
from worker.errors import JobCanceled, JobTimedOut, WorkerStopping
from worker.job_tracing import trace_of
from worker.metrics import gpu_memory
from worker.preview import LazyPreview, store_preview


class StepHook:
    def __init__(self, job: RQJob, conn: redis.Redis, settings: Settings) -> None:
        self.job = job
        self.conn = conn
        self.progress_every = settings.progress_interval_s
        self.heartbeat_every = settings.heartbeat_ttl_s / 3
        self.preview_every = settings.preview_interval_s
        self.preview_ttl_s = settings.artifact_ttl_s
        self._last_progress = 0.0
        self._last_preview = 0.0  # the first step's preview is due at once
        self._last_heartbeat = time.monotonic()
        self._last_webhook = float("-inf")
        self.stopped = False  # ended early, canceled or timed out (in a batch, while its batch-mates go on)
        limit = job.meta.get("timeout_s")
        self.timeout_s = int(limit) if limit else None
        self.deadline = time.monotonic() + self.timeout_s if self.timeout_s else float("inf")
        self.trace = trace_of(job)  # its stages' spans and steps' events (worker/job_tracing.py)

    def check_cancel(self) -> None:
        """Raises where the job must stop now: its worker is stopping, the caller canceled it, or it ran past its
        time limit."""
        if context.stopping.is_set():
            raise WorkerStopping
        if self.conn.exists(keys.cancel_flag(self.job.id)):
            raise JobCanceled
        if self.past_deadline():
            raise JobTimedOut

    def past_deadline(self) -> bool:
        return time.monotonic() > self.deadline

    def keep_alive(self) -> None:
        """Refreshes the heartbeat if it is due: for work between steps (loading data, writing artifacts)."""
        now = time.monotonic()
        if now - self._last_heartbeat >= self.heartbeat_every:
            context.heartbeat.get()()
            self._last_heartbeat = now

    def save_meta(self, **fields: Any) -> None:
        """Writes fields of the job's meta and tells waiting requests that the job changed."""
        self.job.meta.update(fields)
        self.job.save_meta()
        job_changed(self.conn, self.job.id)

    def end(self, outcome: str, **fields: Any) -> None:
        """Records how the job ended (succeeded, failed, canceled, timed_out), with `fields` (result, error)."""
        self.stopped = outcome in ("canceled", "timed_out")
        self.save_meta(outcome=outcome, finished_at=now_iso(), **fields)
        record_endings(self.conn, [self.job], outcome, gpu_memory(self.job))

    def time_out(self) -> None:
        """Ends the job as timed_out: what it wrote so far is not served (a training job's state after its last
        epoch stays in the store, for a resume)."""
        message = f"the job ran past its time limit of {self.timeout_s} s (timeout_s) and was stopped"
        self.end("timed_out", error={"type": "timed_out", "message": message}, artifacts=[], result=None)

    def __call__(
        self, stage: str, step: int, total: int, *, preview: LazyPreview | None = None, **extra: float | int | None
    ) -> None:
        """`extra`: more fields of the job's progress (training: epoch, loss, images_per_second, eta_seconds)."""
        self.check_cancel()
        self.keep_alive()
        self.report(stage, step, total, preview=preview, **extra)

    def report(
        self, stage: str, step: int, total: int, *, preview: LazyPreview | None = None, **extra: float | int | None
    ) -> None:
        """Writes the job's progress, and its preview (computed only then), each if due."""
        self.trace.step(stage, step, total)
        now = time.monotonic()
        if preview is not None and step < total and now - self._last_preview >= self.preview_every:
            store_preview(self.conn, self.job.id, stage, step, total, preview.rows_of(self.job.id), self.preview_ttl_s)
            self._last_preview = now
        if step >= total or now - self._last_progress >= self.progress_every:
            progress = {
                "stage": stage,
                "step": step,
                "total": total,
                "fraction": round(step / max(total, 1), 4),
                **extra,
            }
            self.save_meta(progress=progress)
            self._last_progress = now
            if now - self._last_webhook >= WEBHOOK_PROGRESS_S:  # the POST itself is the API's (service/webhooks.py)
                announce(self.conn, self.job, "progress")
                self._last_webhook = now


class ProgressHook(Protocol):
    """A StepHook, or a BatchHook for a whole batch: (stage, step, total), and the step's preview where there is one."""

    def __call__(self, stage: str, step: int, total: int, *, preview: LazyPreview | None = None) -> None: ...


class BatchHook:
    """The step hook of jobs run as one loop. A canceled or timed-out job ends at once (its rows run on to the end
    of the loop, unsaved) and the others go on; the loop stops when none is left."""

    def __init__(self, hooks: list[StepHook]) -> None:
        self.hooks = hooks

    def __call__(self, stage: str, step: int, total: int, *, preview: LazyPreview | None = None) -> None:
        if context.stopping.is_set():
            raise WorkerStopping
        live = [hook for hook in self.hooks if not hook.stopped]
        with live[0].conn.pipeline(transaction=False) as pipe:
            for hook in live:
                pipe.exists(keys.cancel_flag(hook.job.id))
            flags = pipe.execute()
        for hook, flag in zip(live, flags, strict=True):
            if flag:
                hook.end("canceled")
            elif hook.past_deadline():
                hook.time_out()
        live = [hook for hook in live if not hook.stopped]
        if not live:
            raise JobCanceled
        self.hooks[0].keep_alive()  # the worker's heartbeat covers every job of the batch
        for hook in live:
            hook.report(stage, step, total, preview=preview)
