"""How an RQ job reads as a Job of docs/api.md: its status and error, derived from RQ's status and the job's meta.

The worker writes `meta.outcome` when it ends a job itself (succeeded, a caller's input error, canceled); RQ's own
status covers the rest: queued, running, retried after a lost worker, failed after the last attempt.
"""

from datetime import UTC, datetime
from typing import Any

from rq.job import Job as RQJob
from rq.job import JobStatus

from core import keys
from core.queue_place import place
from core.rq_internals import lost_by_worker
from core.schemas.responses import Artifact, Job, JobError, Progress

QUEUED = {JobStatus.QUEUED, JobStatus.SCHEDULED, JobStatus.DEFERRED, JobStatus.CREATED}
WORKER_LOST = JobError(
    type="worker_lost",
    message="The worker running this job stopped answering on every attempt allowed; submit the job again.",
)
INTERNAL = JobError(type="internal_error", message="The job failed on every attempt allowed; submit it again.")


def iso(value: datetime | str | None) -> str | None:
    if value is None or isinstance(value, str):
        return value
    return value.strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def now_iso() -> str:
    """The time now, as jobs record it."""
    return str(iso(datetime.now(UTC)))


def status_and_error(job: RQJob) -> tuple[str, JobError | None]:
    meta = job.meta
    outcome = meta.get("outcome")
    if outcome:
        error = meta.get("error")
        return outcome, JobError(**error) if error else None
    status = job.get_status(refresh=False)
    if status in QUEUED:
        return "queued", None
    if status == JobStatus.STARTED:
        return "running", None
    if status in (JobStatus.CANCELED, JobStatus.STOPPED):
        return "canceled", None
    if status == JobStatus.FAILED:
        if lost_by_worker(job.latest_result()):
            return "failed", WORKER_LOST
        error = meta.get("error")
        return "failed", JobError(**error) if error else INTERNAL
    return "succeeded", None


def to_view(job: RQJob) -> Job:
    status, error = status_and_error(job)
    meta: dict[str, Any] = job.meta
    params: dict[str, Any] = job.args[0]
    progress = meta.get("progress")
    position = eta = None  # position 1: the next job its pool will run; None: not in a queue (a retry on its way)
    if status == "queued":
        hint = meta.pop("place_hint", None)  # a job just enqueued: read in its enqueue's transaction
        position, eta = place(job, job.get_position()) if hint is None else tuple(hint)
    finished = meta.get("finished_at") or (iso(job.ended_at) if status in ("succeeded", "failed") else None)
    return Job(
        id=job.id,
        kind=params["kind"],
        status=status,  # type: ignore[arg-type]
        model=params["model"],
        created_at=iso(job.created_at) or "",
        started_at=meta.get("started_at"),
        finished_at=finished,
        queue_position=position,
        queue_eta_seconds=eta,
        priority=params.get("priority", "normal"),
        group_id=meta.get("group"),
        progress=Progress(**progress) if progress else None,
        params=params,
        artifacts=[Artifact(**a, url=f"/v1/jobs/{job.id}/artifacts/{a['name']}") for a in meta.get("artifacts", [])],
        result=meta.get("result"),
        error=error,
        attempts=int(meta.get("attempts", 0)),
    )


def artifact_key(job: RQJob, name: str) -> str | None:
    """The store key of a job's artifact, only for names the job lists (so no name can escape its folder)."""
    if any(a["name"] == name for a in job.meta.get("artifacts", [])):
        return keys.artifact(job.id, name)
    return None
