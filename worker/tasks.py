"""The job function RQ runs (`worker.tasks.run_job`): re-validate, run the kind, record how it ended.

Ends a job itself (no retry) when the caller canceled it, its input cannot be used, its model does not load here, or
its training diverged;
re-raises anything else, so RQ retries it a bounded number of times (a cause that may pass: a lost worker, CUDA out
of memory). A retried `train` job goes on from its last saved epoch.
"""

import logging
from datetime import UTC, datetime
from typing import Any

import torch
from pydantic import ValidationError
from rq import get_current_job

from models.training import TrainingDiverged
from service.job_state import iso
from service.schemas.jobs import Schedule, TrainJob, parse_job
from service.settings import get_settings
from service.store import make_store
from worker.dispatch import run_kind
from worker.errors import InputError, JobCanceled, ModelUnavailable, ModelUnreadable, WorkerStopping
from worker.gpu import measured
from worker.hook import StepHook
from worker.kinds import JobContext
from worker.model_cache import get_cache
from worker.outputs import Outputs
from worker.train import run_train

log = logging.getLogger(__name__)


def _now() -> str | None:
    return iso(datetime.now(UTC))


def run_job(params: dict[str, Any]) -> None:
    job = get_current_job()
    assert job is not None, "run_job runs inside an RQ worker"
    if job.meta.get("outcome"):  # it ended already: a run taken for abandoned that finished after all
        log.warning("job=%s ended %s already; not run again", job.id, job.meta["outcome"])
        return
    settings = get_settings()
    hook = StepHook(job, job.connection, settings)
    attempt = int(job.meta.get("attempts", 0)) + 1
    hook.save_meta(attempts=attempt, started_at=_now(), progress=None, error=None)
    log.info("job=%s attempt=%d %s on %s", job.id, attempt, params.get("kind"), params.get("model"))
    try:
        hook.check_cancel()
        req = parse_job(params)
        store = make_store(settings, job.connection)
        if isinstance(req, TrainJob):
            result = run_train(req, job, store, hook, settings)
        else:
            model = get_cache().load(req.model, str(job.meta.get("owner")), job.connection, store)
            if isinstance(req, Schedule) and req.clip_denoised:
                model = model.clipped()
            ctx = JobContext(model, store, hook, Outputs(job, store, hook, settings.artifact_ttl_s))
            with measured(model.device) as gpu_memory, torch.inference_mode():
                result = run_kind(req, ctx)
            if gpu_memory:
                result["gpu_memory"] = gpu_memory
    except WorkerStopping:
        log.warning("job=%s attempt=%d stopped with its worker; queued again", job.id, attempt)
        job.retries_left = (job.retries_left or 0) + 1  # RQ's retry path requeues it; the stop costs no attempt
        job.enqueue_at_front_on_retry = True
        raise
    except JobCanceled:
        log.info("job=%s canceled", job.id)
        hook.save_meta(outcome="canceled", finished_at=_now())
        return
    except TrainingDiverged as exc:
        log.info("job=%s diverged: %s", job.id, exc)
        error = {"type": "training_diverged", "message": str(exc)}
        hook.save_meta(outcome="failed", error=error, finished_at=_now())
        return
    except (InputError, ValidationError) as exc:
        log.info("job=%s failed on its input: %s", job.id, exc)
        error = {"type": "invalid_input", "message": str(exc).splitlines()[0]}
        hook.save_meta(outcome="failed", error=error, finished_at=_now())
        return
    except ModelUnavailable as exc:
        log.info("job=%s: %s", job.id, exc)
        hook.save_meta(outcome="failed", error={"type": "model_unavailable", "message": str(exc)}, finished_at=_now())
        return
    except torch.cuda.OutOfMemoryError as exc:
        log.exception("job=%s attempt=%d: CUDA out of memory", job.id, attempt)
        torch.cuda.empty_cache()  # what the failed job held goes back before the next one
        message = f"the GPU ran out of memory ({str(exc).splitlines()[0][:200]}); fewer images (n) need less"
        hook.save_meta(error={"type": "out_of_memory", "message": message})
        raise
    except ModelUnreadable as exc:
        log.exception("job=%s attempt=%d: %s", job.id, attempt, exc)
        hook.save_meta(error={"type": "model_unreadable", "message": str(exc)})
        raise
    except Exception as exc:
        log.exception("job=%s attempt=%d raised", job.id, attempt)
        hook.save_meta(error={"type": "internal_error", "message": f"{type(exc).__name__}: {exc}"[:300]})
        raise
    hook.save_meta(outcome="succeeded", result=result, finished_at=_now())
    log.info("job=%s succeeded", job.id)
