"""What each key uses (docs/operations/quotas.md): its active jobs (queued plus running) and, per UTC day, the
images it asked for and the seconds its jobs ran on a worker.

Charged when a job is enqueued, in the enqueue's own transaction (service/jobs.py); released when the job ends in
any way, in the end's own trip (core/endings.py): the worker, a cancel while queued, or the reaper after a worker's
death. Images are the job's `n` (1 for kinds without one; a train job none): a job canceled before it ran gets its
images back, one that ran keeps them spent.
"""

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import cast

import redis
from redis.client import Pipeline
from rq.job import Job as RQJob

from core import keys
from core.job_metrics import seconds_since
from core.job_state import status_and_error
from core.rq_internals import job_from_hash, job_key
from core.schemas.responses import TERMINAL

DAY_TTL_S = 3 * 24 * 3600  # a day's counters outlive the day, for GET /v1/usage's yesterday and clock skew


def today() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%d")


def seconds_to_midnight() -> int:
    """Seconds until the UTC day's counters give way to the next day's (at least 1)."""
    now = datetime.now(UTC)
    midnight = (now + timedelta(days=1)).replace(hour=0, minute=0, second=0, microsecond=0)
    return max(1, int((midnight - now).total_seconds()) + 1)


def next_midnight_iso() -> str:
    tomorrow = datetime.now(UTC) + timedelta(days=1)
    return tomorrow.strftime("%Y-%m-%dT00:00:00Z")


def charge(pipe: Pipeline, owner: str, job_ids: list[str], images: int, day: str) -> None:
    """Queues on `pipe` the use of jobs just enqueued: each active, their images spent today."""
    pipe.sadd(keys.active_jobs(owner), *job_ids)
    if images:
        pipe.hincrby(keys.usage_day(owner, day), "images", images)
        pipe.expire(keys.usage_day(owner, day), DAY_TTL_S)


def release(pipe: Pipeline, job: RQJob, outcome: str) -> None:
    """Queues on `pipe` the end of a job's use: no longer active; its worker seconds counted on the day it ends;
    its images back if it never ran."""
    owner = job.meta.get("owner")
    if not isinstance(owner, str):
        return
    pipe.srem(keys.active_jobs(owner), job.id)
    ran_s = seconds_since(job.meta.get("started_at"))
    day = today()
    if ran_s is not None:
        pipe.hincrbyfloat(keys.usage_day(owner, day), "gpu_seconds", round(ran_s, 3))
        pipe.expire(keys.usage_day(owner, day), DAY_TTL_S)
    elif outcome == "canceled" and job.meta.get("images"):
        pipe.hincrby(keys.usage_day(owner, str(job.meta.get("charged_on", day))), "images", -int(job.meta["images"]))


@dataclass(frozen=True)
class Usage:
    active_jobs: int
    images_today: int
    gpu_seconds_today: float


def read(conn: redis.Redis, owner: str) -> Usage:
    """The key's use now: its active jobs (each checked to still be queued or running), images and seconds today."""
    prune(conn, owner)
    with conn.pipeline(transaction=False) as pipe:
        pipe.scard(keys.active_jobs(owner))
        pipe.hmget(keys.usage_day(owner, today()), "images", "gpu_seconds")
        active, (images, seconds) = pipe.execute()
    return Usage(int(active), int(images or 0), round(float(seconds or 0), 3))


def prune(conn: redis.Redis, owner: str) -> int:
    """Takes out of the key's active set the jobs that ended or no longer exist, whose end was not recorded here (a
    Redis error at that moment, a job deleted by an operator): a lost end never holds a slot for good. Returns how
    many it took out."""
    members = [m.decode() for m in cast(set[bytes], conn.smembers(keys.active_jobs(owner)))]
    if not members:
        return 0
    with conn.pipeline(transaction=False) as pipe:
        for job_id in members:
            pipe.hgetall(job_key(job_id))
        rows = pipe.execute()
    gone = [
        job_id
        for job_id, row in zip(members, rows, strict=True)
        if not row or status_and_error(job_from_hash(conn, job_id, row))[0] in TERMINAL
    ]
    if gone:
        conn.srem(keys.active_jobs(owner), *gone)
    return len(gone)
