"""Jobs in Redis: create (with idempotency and a bounded queue), fetch as the owner, list, cancel.

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
from typing import cast

import redis
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
from core.rq_internals import job_from_hash, job_key, queue_key
from core.schemas.responses import TERMINAL
from core.settings import Settings

log = logging.getLogger(__name__)
TASK = "worker.tasks.run_job"
JOB_TIMEOUT_S = {"noise": 600, "denoise": 1800, "train": 7 * 24 * 3600}
DEFAULT_TIMEOUT_S = 3600
SCAN_BATCH = 200


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
        queue: str,
        idempotency_key: str | None,
        digest: str,
        before_enqueue: Callable[[str], None] | None = None,
    ) -> tuple[RQJob, bool]:
        """Returns the job and whether it is new (False: the idempotent replay of an earlier POST).

        `before_enqueue(job_id)` runs for a new job only, just before it is queued; it may raise to refuse it."""
        job_id = str(uuid.uuid4())
        if idempotency_key is not None:
            idem = keys.idempotency(owner, hashlib.sha256(idempotency_key.encode()).hexdigest())
            record = json.dumps({"digest": digest, "job_id": job_id})
            if not self.conn.set(idem, record, nx=True, ex=self.settings.artifact_ttl_s):
                earlier = json.loads(self.conn.get(idem) or record)
                if earlier["digest"] != digest:
                    raise Conflict("This Idempotency-Key was used with another body; use a new key for a new job.")
                try:
                    return self.fetch(owner, earlier["job_id"]), False
                except NotFound:
                    self.conn.set(idem, record, ex=self.settings.artifact_ttl_s)  # its job expired: start anew
        try:
            if before_enqueue is not None:
                before_enqueue(job_id)
        except Exception:
            if idempotency_key is not None:
                self.conn.delete(idem)  # refused: the key stays free for a corrected request
            raise
        return self._enqueue(owner, req, queue, job_id), True

    def _enqueue(self, owner: str, req: JobBase, queue_name: str, job_id: str) -> RQJob:
        """Queues the job in one round trip: the job, its queue entry, the owner's list and the queue's length after
        it, in one transaction. Past `max_queue_depth` the job is taken back out (a rare, second trip), so the limit
        costs a submission no LLEN of its own."""
        queue = self.queue(queue_name)
        if req.seed is None:
            req.seed = secrets.randbits(31)
        params = req.model_dump(mode="json", exclude_none=True)
        kind = params["kind"]
        ttl = self.settings.artifact_ttl_s
        now = time.time()
        with self.conn.pipeline() as pipe:
            job = queue.enqueue_call(
                TASK,
                args=[params],
                job_id=job_id,
                timeout=JOB_TIMEOUT_S.get(kind, DEFAULT_TIMEOUT_S),
                result_ttl=ttl,
                failure_ttl=ttl,
                retry=Retry(max=self.settings.job_retries) if self.settings.job_retries else None,
                meta={"owner": owner, "attempts": 0, "artifacts": []},
                description=f"{kind} on {params['model']}",
                pipeline=pipe,
            )
            pipe.zadd(keys.owner_jobs(owner), {job_id: now})
            pipe.zremrangebyscore(keys.owner_jobs(owner), 0, now - ttl)
            pipe.llen(queue_key(queue))
            depth = int(pipe.execute()[-1])
        if depth > self.settings.max_queue_depth and self._take_back(queue, owner, job_id):
            raise Unavailable(f"The {queue_name} queue is full; retry later.", retry_after=10)
        job.meta["position_hint"] = depth  # not saved: the new job's place, without an O(n) LPOS
        return job

    def _take_back(self, queue: Queue, owner: str, job_id: str) -> bool:
        """Removes a job just queued past the limit; False when a worker has dequeued it already (it then stays)."""
        if not self.conn.lrem(queue_key(queue), 1, job_id):
            return False
        with self.conn.pipeline() as pipe:
            pipe.delete(job_key(job_id))
            pipe.zrem(keys.owner_jobs(owner), job_id)
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
