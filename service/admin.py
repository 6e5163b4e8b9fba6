"""The operator's view and levers (docs/operations/administration.md): RQ's workers and every queue of every pool,
pausing a queue, and retrying failed jobs of any owner. The routes (service/routes/admin.py) admit admin keys only.

An admin is a key of ADMIN_KEYS, known by its owner hash as every key is (service/auth.py). With no API_KEYS the
server listens on loopback only, one user's machine, and that user (`anonymous`) is the admin.
"""

import redis
from pydantic import BaseModel
from rq import Queue, Worker
from rq.exceptions import NoSuchJobError
from rq.job import Job as RQJob
from rq.registry import FailedJobRegistry
from rq.serializers import JSONSerializer

from core import keys, pause
from core.errors import Conflict, Forbidden, NotFound
from core.job_state import iso
from core.queues import all_queues, split
from core.rq_internals import queue_key, registry_counts, worker_keys
from core.settings import Settings
from service.auth import ANONYMOUS, key_hash
from service.jobs import retry


class WorkerView(BaseModel):
    name: str
    hostname: str | None
    pid: int | None
    queues: list[str]  # in the order it takes jobs from them
    state: str  # RQ's: "idle", "busy", "suspended", ...
    current_job_id: str | None
    last_heartbeat: str | None
    birth: str | None
    gpu: str | None  # the device name the worker's torch sees; "" without CUDA; None: not reported (yet)
    cuda_visible_devices: str | None  # as the worker was started; "" when unset


class WorkerList(BaseModel):
    workers: list[WorkerView]


class QueueView(BaseModel):
    name: str
    pool: str
    priority: str
    queued: int
    started: int
    failed: int
    deferred: int
    scheduled: int
    workers: int  # registered on it
    paused: bool


class QueueList(BaseModel):
    queues: list[QueueView]


class Requeued(BaseModel):
    queue: str
    count: int
    ids: list[str]


def require_admin(owner: str, settings: Settings) -> None:
    """Refuses a key that is not in ADMIN_KEYS (403); the loopback user of a keyless server is the admin."""
    if owner == ANONYMOUS:
        return
    if owner not in {key_hash(key)[:32] for key in settings.admin_key_list}:
        raise Forbidden("This API key may not use /v1/admin: only the keys listed in ADMIN_KEYS may.")


def known_queue(name: str) -> str:
    if name not in all_queues():
        raise NotFound(f"No queue {name!r}; GET /v1/admin/queues lists them.")
    return name


def _text(value: bytes | str | None) -> str | None:
    return value.decode() if isinstance(value, bytes) else value


def list_workers(conn: redis.Redis) -> WorkerList:
    workers = sorted(Worker.all(connection=conn, serializer=JSONSerializer), key=lambda w: w.name)
    with conn.pipeline(transaction=False) as pipe:
        for worker in workers:
            pipe.hgetall(keys.worker_info(worker.name))
        infos: list[dict[bytes, bytes]] = pipe.execute()
    return WorkerList(
        workers=[
            WorkerView(
                name=worker.name,
                hostname=worker.hostname,
                pid=worker.pid,
                queues=worker.queue_names(),
                state=str(worker.get_state()),
                current_job_id=worker.get_current_job_id(),
                last_heartbeat=iso(worker.last_heartbeat),
                birth=iso(worker.birth_date),
                gpu=_text(info.get(b"gpu")),
                cuda_visible_devices=_text(info.get(b"cuda_visible_devices")),
            )
            for worker, info in zip(workers, infos, strict=True)
        ]
    )


def describe_queue(conn: redis.Redis, name: str, paused: set[str]) -> QueueView:
    queue = Queue(name, connection=conn, serializer=JSONSerializer)
    pool, priority = split(name)
    return QueueView(
        name=name,
        pool=pool,
        priority=priority,
        queued=int(conn.llen(queue_key(queue))),
        **registry_counts(conn, name),
        workers=len(worker_keys(queue)),
        paused=name in paused,
    )


def list_queues(conn: redis.Redis) -> QueueList:
    paused = pause.paused(conn)
    return QueueList(queues=[describe_queue(conn, name, paused) for name in all_queues()])


def set_paused(conn: redis.Redis, name: str, paused: bool) -> QueueView:
    """Pauses a queue (its workers take no new job from it) or resumes it."""
    (pause.pause if paused else pause.resume)(conn, known_queue(name))
    return describe_queue(conn, name, pause.paused(conn))


def fetch_any(conn: redis.Redis, job_id: str) -> RQJob:
    """A job of any owner."""
    try:
        return RQJob.fetch(job_id, connection=conn, serializer=JSONSerializer)
    except NoSuchJobError:
        raise NotFound(f"No job {job_id!r} (or it expired).") from None


def retry_job(conn: redis.Redis, job_id: str) -> RQJob:
    job = fetch_any(conn, job_id)
    retry(conn, job)
    return job


def requeue_failed(conn: redis.Redis, name: str, ids: list[str] | None) -> Requeued:
    """Every job of the queue's failed registry (or those of `ids`, each of which must be there) queued again."""
    registry = FailedJobRegistry(known_queue(name), connection=conn, serializer=JSONSerializer)
    failed = registry.get_job_ids()
    if ids is not None:
        missing = [job_id for job_id in ids if job_id not in failed]
        if missing:
            raise Conflict(f"Not in the failed registry of {name}: {', '.join(missing)}; nothing was requeued.")
        failed = list(dict.fromkeys(ids))
    requeued = []
    for job_id in failed:
        try:
            job = RQJob.fetch(job_id, connection=conn, serializer=JSONSerializer)
        except NoSuchJobError:  # its hash expired: RQ's clean-up drops the entry
            registry.remove(job_id)
            continue
        retry(conn, job)
        requeued.append(job_id)
    return Requeued(queue=name, count=len(requeued), ids=requeued)
