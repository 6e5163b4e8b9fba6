"""Jobs in Redis: create (with idempotency, the key's quotas and a bounded queue; one job or a group's many, all or
none), fetch as the owner, list, cancel, resume a train job that timed out.

A job is an RQ job whose one argument is the validated request (JSON, never pickle) and whose `meta` holds what
the service adds: the owner, progress, artifacts, result, error, outcome. One record, no second copy to drift.
"""

import base64
import hashlib
import json
import logging
import math
import secrets
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, cast

import redis
from redis.client import Pipeline
from rq import Queue, Retry
from rq.exceptions import NoSuchJobError
from rq.job import Job as RQJob
from rq.job import JobStatus
from rq.serializers import JSONSerializer

from core import keys
from core.endings import record_endings
from core.errors import Conflict, InvalidRequest, NotFound, Unavailable
from core.events import job_changed
from core.job_state import now_iso, status_and_error
from core.kinds.base import JobBase
from core.model_registry import ModelRegistry
from core.queue_place import place_of, read_place
from core.queues import queue_name
from core.rq_internals import job_from_hash, job_key, queue_key, requeue_ended
from core.schemas.responses import TERMINAL
from core.settings import Settings
from core.tracing import enqueue_span, job_meta
from core.usage import charge
from service.quotas import Quotas

log = logging.getLogger(__name__)
TASK = "worker.tasks.run_job"
# RQ's own time limit is the job's plus this: the worker ends a job past its `timeout_s` itself, at its next step
# (worker/hook.py); RQ's limit catches a job stuck outside any step (a model load that hangs).
HARD_LIMIT_GRACE_S = 60
SCAN_BATCH = 200
RETRYABLE = ("failed", "timed_out")  # the endings a job may be queued again from (an operator's retry, a resume)
CLEARED = ("outcome", "error", "result", "progress", "started_at", "finished_at", "artifacts")  # a past attempt's
Extra = Callable[[Pipeline, list[RQJob]], None]  # more commands for an enqueue's transaction, given its jobs


@dataclass
class Entry:
    """One job to enqueue: the admitted request, the pool it runs on (its priority picks the queue), its id and any
    meta of the caller's (a group's id)."""

    req: JobBase
    pool: str
    job_id: str = field(default_factory=lambda: str(uuid.uuid4()))
    meta: dict[str, Any] = field(default_factory=dict)


def queue_for(conn: redis.Redis, name: str) -> Queue:
    return Queue(name, connection=conn, serializer=JSONSerializer)


def body_digest(body: bytes) -> str:
    """The same JSON in another key order or spacing is the same body."""
    return hashlib.sha256(json.dumps(json.loads(body), sort_keys=True).encode()).hexdigest()


class JobRepo:
    def __init__(self, conn: redis.Redis, settings: Settings) -> None:
        self.conn = conn
        self.settings = settings
        self._queues: dict[str, Queue] = {}

    def queue(self, name: str) -> Queue:
        """One Queue object per name (it caches the server's version, which RQ would otherwise ask per job)."""
        if name not in self._queues:
            self._queues[name] = queue_for(self.conn, name)
        return self._queues[name]

    def fetch(self, owner: str, job_id: str) -> RQJob:
        try:
            job = RQJob.fetch(job_id, connection=self.conn, serializer=JSONSerializer)
        except NoSuchJobError:
            job = None
        if job is None or job.meta.get("owner") != owner:
            raise NotFound(f"No job {job_id} of yours exists (finished jobs expire after their time-to-live).")
        return job

    def create(
        self,
        owner: str,
        req: JobBase,
        pool: str,
        idempotency_key: str | None,
        digest: str,
        before_enqueue: Callable[[str], None] | None = None,
    ) -> tuple[RQJob, bool]:
        """Returns the job and whether it is new (False: the idempotent replay of an earlier POST).

        `before_enqueue(job_id)` runs for a new job only, just before it is queued; it may raise to refuse it."""
        job_id = str(uuid.uuid4())
        ttl = self.settings.artifact_ttl_s
        idem = keys.idempotency(owner, key_digest(idempotency_key)) if idempotency_key is not None else None
        if idem is not None and (earlier := remembered(self.conn, idem, digest, job_id, ttl, "job")) is not None:
            try:
                return self.fetch(owner, earlier), False
            except NotFound:
                remember(self.conn, idem, digest, job_id, ttl)  # its job expired: start anew
        try:
            if before_enqueue is not None:
                before_enqueue(job_id)
            return self.enqueue(owner, [Entry(req, pool, job_id)])[0], True
        except Exception:
            if idem is not None:
                self.conn.delete(idem)  # refused: the key stays free for a corrected request
            raise

    def enqueue(self, owner: str, entries: list["Entry"], extra: Extra | None = None) -> list[RQJob]:
        """Queues the jobs, all or none, in one transaction with the key's use (core/usage.py), the owner's list,
        `extra`'s own commands (a group's record), the length of each queue after it and a lone job's place
        (core/queue_place.py): one round trip, and one more to read the key's use first when the deployment sets
        quotas (WATCHed, so two submissions never both take the last slot). Past `max_queue_depth` the jobs are taken
        back out (a rare, second trip), so the limit costs a submission no LLEN of its own."""
        for entry in entries:
            if entry.req.seed is None:
                entry.req.seed = secrets.randbits(31)
        images = sum(entry.req.image_count() for entry in entries)
        quotas = Quotas(self.conn, self.settings)
        with enqueue_span([entry.job_id for entry in entries]), self.conn.pipeline() as pipe:
            while True:
                try:
                    day = quotas.check(pipe, owner, len(entries), images)
                    jobs = [self._enqueue_call(pipe, owner, entry, day) for entry in entries]
                    names = sorted({job.origin for job in jobs})
                    now = time.time()
                    charge(pipe, owner, [job.id for job in jobs], images, day)
                    pipe.zadd(keys.owner_jobs(owner), {job.id: now for job in jobs})
                    pipe.zremrangebyscore(keys.owner_jobs(owner), 0, now - self.settings.artifact_ttl_s)
                    if extra is not None:
                        extra(pipe, jobs)
                    for name in names:
                        pipe.llen(queue_key(self.queue(name)))
                    lone = len(jobs) == 1
                    reads = read_place(pipe, jobs[0].origin, jobs[0].args[0]) if lone else 0
                    results = pipe.execute()
                    tail = results[len(results) - reads - len(names) : len(results) - reads]
                    depths = dict(zip(names, (int(d) for d in tail), strict=True))
                    break
                except redis.WatchError:
                    pipe.reset()  # another submission or an end of this key's changed its use: read it again
        full = [name for name, depth in depths.items() if depth > self.settings.max_queue_depth]
        if full and self._take_back(owner, jobs, images, day):
            raise Unavailable(f"The {full[0]} queue is full; retry later.", retry_after=10)
        if lone:  # not saved: the new job's place, read in the same trip, without an LPOS
            jobs[0].meta["place_hint"] = place_of(depths[jobs[0].origin] - 1, results[len(results) - reads :])
        return jobs

    def _enqueue_call(self, pipe: Pipeline, owner: str, entry: "Entry", day: str) -> RQJob:
        req = entry.req
        params = req.model_dump(mode="json", exclude_none=True)
        kind = params["kind"]
        ttl = self.settings.artifact_ttl_s
        limit = req.timeout_s or self.settings.timeout_bound_s(kind)
        meta = {"owner": owner, "attempts": 0, "artifacts": [], "timeout_s": limit, **entry.meta}
        meta |= job_meta()  # the trace's carrier, taken in the enqueue span: the worker's span continues it
        if images := req.image_count():
            meta |= {"images": images, "charged_on": day}
        return self.queue(queue_name(entry.pool, req.priority)).enqueue_call(
            TASK,
            args=[params],
            job_id=entry.job_id,
            timeout=limit + HARD_LIMIT_GRACE_S,  # RQ's own limit: only for a job stuck outside its steps
            result_ttl=ttl,
            failure_ttl=ttl,
            retry=Retry(max=self.settings.job_retries) if self.settings.job_retries else None,
            meta=meta,
            description=f"{kind} on {params['model']}",
            pipeline=pipe,
        )

    def _take_back(self, owner: str, jobs: list[RQJob], images: int, day: str) -> bool:
        """Removes jobs just queued past the limit, with their use; False when a worker has dequeued one already
        (they then all stay: a group is all or nothing; only a queue deeper than MAX_QUEUE_DEPTH gets here, and new
        jobs wait at its tail)."""
        with self.conn.pipeline() as pipe:
            for job in jobs:
                pipe.lrem(queue_key(self.queue(job.origin)), 1, job.id)
            removed = pipe.execute()
        if not all(removed):
            for job, was_removed in zip(jobs, removed, strict=True):
                if was_removed:
                    self.conn.rpush(queue_key(self.queue(job.origin)), job.id)  # back at the tail, where it was
            return False
        with self.conn.pipeline() as pipe:
            pipe.delete(*(job_key(job.id) for job in jobs))
            pipe.zrem(keys.owner_jobs(owner), *(job.id for job in jobs))
            pipe.srem(keys.active_jobs(owner), *(job.id for job in jobs))
            if images:
                pipe.hincrby(keys.usage_day(owner, day), "images", -images)
            pipe.execute()
        return True

    def _unclaimed(self, job: RQJob) -> bool:
        """Whether no worker holds a job that reads as queued, so the API may end it: taken out of its queue's list
        here (one LREM, atomic against a worker's dequeue), or in no list at all (a retry waiting for its time). A job
        a worker dequeued a moment ago is the worker's to end: it sees the cancel flag before it runs a step, and an
        ending written here as well would race the worker's own (its meta overwritten, its status finished)."""
        if job.get_status(refresh=False) != JobStatus.QUEUED:
            return True
        return bool(self.conn.lrem(queue_key(self.queue(job.origin)), 1, job.id))

    def resume(self, owner: str, job_id: str, shipped: set[str]) -> RQJob:
        """A train job that timed out (or failed) queued again: it goes on from the state of its last finished
        epoch, kept in the store for this (worker/train.py), with its `timeout_s` counted anew. Its model's name is
        claimed again (409 if another job of the owner's took it meanwhile)."""
        job = self.fetch(owner, job_id)
        params = job.args[0]
        if params.get("kind") != "train":
            raise Conflict(f"Job {job_id} is a {params.get('kind')} job; only a train job can be resumed.")
        status, _ = status_and_error(job)
        if status not in RETRYABLE:
            raise Conflict(f"Job {job_id} is {status}; only a train job that timed out or failed can be resumed.")
        ModelRegistry(self.conn).claim(owner, params["name"], job_id, shipped)
        retry(self.conn, job)
        log.info("job=%s resumed by its owner", job_id)
        return self.fetch(owner, job_id)

    def find(
        self, owner: str, status: str | None, kind: str | None, limit: int, cursor: str | None
    ) -> tuple[list[RQJob], str | None]:
        """Newest first. The cursor is the (score, id) of the last job returned, so new jobs never shift a page."""
        top, after_id = _decode_cursor(cursor) if cursor else (float("inf"), None)
        found: list[RQJob] = []
        while True:
            rows = self._rows(owner, top, after_id)
            jobs = fetch_many(self.conn, [job_id for _, job_id in rows])
            for (score, job_id), job in zip(rows, jobs, strict=True):
                top, after_id = score, job_id
                if job is not None and _matches(job, status, kind):
                    found.append(job)
                    if len(found) == limit:
                        return found, _encode_cursor(score, job_id)
            if len(rows) < SCAN_BATCH:
                return found, None

    def _rows(self, owner: str, top: float, after_id: str | None) -> list[tuple[float, str]]:
        """Up to SCAN_BATCH (score, id) below the cursor; members of equal score come in descending id order."""
        raw = self.conn.zrevrangebyscore(keys.owner_jobs(owner), top, "-inf", 0, SCAN_BATCH, withscores=True)
        raw_rows = cast(list[tuple[bytes, float]], raw)
        rows = [(float(score), member.decode()) for member, score in raw_rows]
        return [(s, m) for s, m in rows if after_id is None or s < top or m < after_id]

    def cancel(self, owner: str, job_id: str) -> RQJob:
        """Idempotent. The flag first: a worker that dequeued the job a moment ago sees it before it starts."""
        job = self.fetch(owner, job_id)
        status, _ = status_and_error(job)
        if status in TERMINAL:
            return job
        log.info("job=%s cancel requested while %s", job_id, status)
        self.conn.set(keys.cancel_flag(job_id), 1, ex=self.settings.artifact_ttl_s)
        if status == "queued" and self._unclaimed(job):
            job.cancel()
            job.meta["finished_at"] = now_iso()
            job.save_meta()
            record_endings(self.conn, [job], "canceled")
        job_changed(self.conn, job_id)
        return self.fetch(owner, job_id)


def retry(conn: redis.Redis, job: RQJob) -> None:
    """A failed or timed-out job queued again at the back of its own queue, its last attempt's ending cleared so it
    reads "queued" and runs anew (one attempt: RQ's automatic retries were spent); it counts as its key's active job
    again (core/usage.py)."""
    status, _ = status_and_error(job)
    if status not in RETRYABLE:
        raise Conflict(f"Job {job.id} is {status}; only a failed or timed_out job can be retried.")
    for name in CLEARED:
        job.meta.pop(name, None)
    if isinstance(owner := job.meta.get("owner"), str):
        conn.sadd(keys.active_jobs(owner), job.id)  # active again for the key's quota, until it ends again
    requeue_ended(job)
    job_changed(conn, job.id)


def key_digest(idempotency_key: str) -> str:
    return hashlib.sha256(idempotency_key.encode()).hexdigest()


def remember(conn: redis.Redis, name: str, digest: str, made_id: str, ttl_s: int) -> None:
    conn.set(name, json.dumps({"digest": digest, "id": made_id}), ex=ttl_s)


def remembered(conn: redis.Redis, name: str, digest: str, new_id: str, ttl_s: int, what: str) -> str | None:
    """An Idempotency-Key's record (docs/api.md): claims `name` for `new_id` and returns None (this request is the
    first), or returns the id of the job or group the first request with the same body made; another body under the
    same key is a 409."""
    record = json.dumps({"digest": digest, "id": new_id})
    if conn.set(name, record, nx=True, ex=ttl_s):
        return None
    earlier = json.loads(conn.get(name) or record)
    if earlier["digest"] != digest:
        raise Conflict(f"This Idempotency-Key was used with another body; use a new key for a new {what}.")
    return str(earlier.get("id") or earlier["job_id"])  # "job_id": records written before groups had keys


def fetch_many(conn: redis.Redis, job_ids: list[str]) -> list[RQJob | None]:
    """RQ's `Job.fetch_many` in a plain pipeline: Redis refuses every command queued in a MULTI once it is at
    `maxmemory`, and reading the jobs must work then too."""
    with conn.pipeline(transaction=False) as pipe:
        for job_id in job_ids:
            pipe.hgetall(job_key(job_id))
        rows = pipe.execute()
    jobs: list[RQJob | None] = []
    for job_id, row in zip(job_ids, rows, strict=True):
        jobs.append(job_from_hash(conn, job_id, row) if row else None)
    return jobs


def _matches(job: RQJob, status: str | None, kind: str | None) -> bool:
    return (kind is None or job.args[0]["kind"] == kind) and (status is None or status_and_error(job)[0] == status)


def _encode_cursor(score: float, job_id: str) -> str:
    return base64.urlsafe_b64encode(f"{score!r}|{job_id}".encode()).decode()


def _decode_cursor(cursor: str) -> tuple[float, str]:
    try:
        score, job_id = base64.urlsafe_b64decode(cursor.encode()).decode().split("|", 1)
        if math.isnan(float(score)):
            raise ValueError("NaN is no score")
        return float(score), job_id
    except (ValueError, UnicodeDecodeError) as exc:
        raise InvalidRequest(
            "cursor: not a cursor this server gave",
            [{"loc": ["query", "cursor"], "msg": "not a valid cursor"}],
        ) from exc
