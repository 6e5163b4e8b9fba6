"""The job function RQ runs (`worker.tasks.run_job`): re-validate, run the kind, record how it ended.

Ends a job itself (no retry) when the caller canceled it, it ran past its time limit, its input cannot be used, its
model does not load here, or its training diverged;
re-raises anything else, so RQ retries it a bounded number of times (a cause that may pass: a lost worker, CUDA out
of memory). A retried `train` job goes on from its last saved epoch. `run_batch` runs `sample` jobs claimed together
as one loop, each ending as it would alone.
"""

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch
from pydantic import ValidationError
from rq import get_current_job
from rq.job import Job as RQJob
from rq.timeouts import JobTimeoutException

from core.endings import record_endings
from core.job_state import now_iso
from core.kinds import parse_job
from core.kinds.base import Admitted, JobBase, R, Stepping
from core.kinds.sample import SampleJob
from core.kinds.train import TrainJob
from core.outbox import announce
from core.rq_internals import requeue_at_front_for_free, retries_left
from core.settings import Settings, get_settings
from core.store import ArtifactStore, make_store
from models.training import TrainingDiverged
from worker.errors import (
    InputError,
    JobCanceled,
    JobTimedOut,
    ModelUnavailable,
    ModelUnreadable,
    WorkerStopping,
)
from worker.generate import run_samples
from worker.gpu import measured
from worker.hook import BatchHook, StepHook
from worker.job_context import JobContext
from worker.metrics import gpu_memory
from worker.model_cache import Servable, get_cache
from worker.outputs import Outputs
from worker.runners import run_kind
from worker.train import run_train

log = logging.getLogger(__name__)


def begin(job: RQJob, settings: Settings) -> tuple[StepHook, int] | None:
    """The job's hook and attempt number, recorded as started; None when the job ended already (a run taken for
    abandoned that finished after all)."""
    if job.meta.get("outcome"):
        log.warning("job=%s ended %s already; not run again", job.id, job.meta["outcome"])
        return None
    hook = StepHook(job, job.connection, settings)
    attempt = int(job.meta.get("attempts", 0)) + 1
    hook.save_meta(attempts=attempt, started_at=now_iso(), progress=None, error=None)
    announce(job.connection, job, "start")
    log.info("job=%s attempt=%d %s on %s", job.id, attempt, job.args[0].get("kind"), job.args[0].get("model"))
    return hook, attempt


@contextmanager
def recorded(job: RQJob, hook: StepHook, attempt: int) -> Iterator[None]:
    """Records how the job's work inside ended; swallows the endings that are final, re-raises the others for RQ."""
    try:
        yield
    except WorkerStopping:
        log.warning("job=%s attempt=%d stopped with its worker; queued again", job.id, attempt)
        requeue_at_front_for_free(job)  # RQ's retry path requeues it; the stop costs no attempt
        raise
    except JobCanceled:
        log.info("job=%s canceled", job.id)
        hook.end("canceled")
    except (JobTimedOut, JobTimeoutException):  # its own deadline at a step, or RQ's limit outside any step
        log.info("job=%s timed out after %s s", job.id, hook.timeout_s)
        hook.time_out()
    except TrainingDiverged as exc:
        log.info("job=%s diverged: %s", job.id, exc)
        error = {"type": "training_diverged", "message": str(exc)}
        hook.end("failed", error=error)
    except (InputError, ValidationError) as exc:
        log.info("job=%s failed on its input: %s", job.id, exc)
        error = {"type": "invalid_input", "message": str(exc).splitlines()[0]}
        hook.end("failed", error=error)
    except ModelUnavailable as exc:
        log.info("job=%s: %s", job.id, exc)
        hook.end("failed", error={"type": "model_unavailable", "message": str(exc)})
    except torch.cuda.OutOfMemoryError as exc:
        log.exception("job=%s attempt=%d: CUDA out of memory", job.id, attempt)
        torch.cuda.empty_cache()  # what the failed job held goes back before the next one
        message = f"the GPU ran out of memory ({str(exc).splitlines()[0][:200]}); fewer images (n) need less"
        hook.save_meta(error={"type": "out_of_memory", "message": message})
        failed_for_good(job)
        raise
    except ModelUnreadable as exc:
        log.exception("job=%s attempt=%d: %s", job.id, attempt, exc)
        hook.save_meta(error={"type": "model_unreadable", "message": str(exc)})
        failed_for_good(job)
        raise
    except Exception as exc:
        log.exception("job=%s attempt=%d raised", job.id, attempt)
        hook.save_meta(error={"type": "internal_error", "message": f"{type(exc).__name__}: {exc}"[:300]})
        failed_for_good(job)
        raise


def failed_for_good(job: RQJob) -> None:
    """For a job that raises and that RQ will not retry: its end counted for /metrics, and its `completed` webhook
    queued (the deliverer waits for RQ to record the failure)."""
    if not retries_left(job):
        record_endings(job.connection, [job], "failed", gpu_memory(job))


def succeeded(job: RQJob, hook: StepHook, result: dict[str, Any]) -> None:
    hook.end("succeeded", result=result)
    log.info("job=%s succeeded", job.id)


def load_model(req: JobBase, job: RQJob, store: ArtifactStore) -> Servable:
    model = get_cache().load(req.model, str(job.meta.get("owner")), job.connection, store)
    return model.clipped() if isinstance(req, Stepping) and req.clip_denoised else model


def job_context(job: RQJob, hook: StepHook, model: Servable, store: ArtifactStore, settings: Settings) -> JobContext:
    return JobContext(model, store, hook, Outputs(job, store, hook, settings.artifact_ttl_s))


def admitted(params: object, schema: type[R]) -> Admitted[R]:
    """The dequeued payload validated again, as the admitted request of `schema` that the door let in: the API draws
    a seed for every job it accepts, so a payload without one did not come through the door."""
    req = parse_job(params)
    if not isinstance(req, schema):
        raise InputError(f"a {req.kind} job where a {schema.__name__} was expected")
    if req.seed is None:
        raise InputError("the job has no seed: jobs are submitted through POST /v1/jobs, which draws one")
    return Admitted(req, req.seed)


def run_job(params: dict[str, Any]) -> None:
    job = get_current_job()
    assert job is not None, "run_job runs inside an RQ worker"
    settings = get_settings()
    begun = begin(job, settings)
    if begun is None:
        return
    hook, attempt = begun
    with recorded(job, hook, attempt):
        hook.check_cancel()
        admitted_job = admitted(params, JobBase)
        req = admitted_job.req
        store = make_store(settings, job.connection)
        if isinstance(req, TrainJob):
            result = run_train(Admitted(req, admitted_job.seed), job, store, hook, settings)
        else:
            model = load_model(req, job, store)
            ctx = job_context(job, hook, model, store, settings)
            with measured(model.device) as gpu_memory, torch.inference_mode():
                result = run_kind(admitted_job, ctx)
            if gpu_memory:
                result["gpu_memory"] = gpu_memory
        succeeded(job, hook, result)


def run_batch(jobs: list[RQJob]) -> list[BaseException | None]:
    """`sample` jobs claimed together (worker/batching.py) run as one loop; each ends as it would alone. Returns,
    per job, what RQ must treat as the job's failure (a retry), or None."""
    settings = get_settings()
    failures: dict[str, BaseException] = {}
    members: list[tuple[RQJob, StepHook, int, Admitted[SampleJob]]] = []
    for job in jobs:
        begun = begin(job, settings)
        if begun is None:
            continue
        hook, attempt = begun
        try:
            with recorded(job, hook, attempt):
                hook.check_cancel()
                members.append((job, *begun, admitted(job.args[0], SampleJob)))
        except BaseException as exc:  # RQ retries it, as it would the job alone
            failures[job.id] = exc
    if members:
        try:
            store = make_store(settings, jobs[0].connection)
            model = load_model(members[0][3].req, members[0][0], store)
            batch = [(req, job_context(job, hook, model, store, settings)) for job, hook, _, req in members]
            with measured(model.device) as gpu_memory, torch.inference_mode():
                results = run_samples(batch, BatchHook([hook for _, hook, _, _ in members]))
        except BaseException as exc:  # each job records it as its own
            for job, hook, attempt, _ in members:
                if hook.stopped:
                    continue
                try:
                    with recorded(job, hook, attempt):
                        raise exc
                except BaseException as own:
                    failures[job.id] = own
        else:
            for (job, hook, _, _), result in zip(members, results, strict=True):
                if not hook.stopped:
                    succeeded(job, hook, {**result, **({"gpu_memory": gpu_memory} if gpu_memory else {})})
    return [failures.get(job.id) for job in jobs]
