"""Paused queues (docs/operations/administration.md, "Pausing a queue"): a set in Redis of the queue names whose
workers take no new job. The job in hand finishes, queued jobs stay queued and submissions are still accepted; each
worker reads the set before every wait for a job (core/rq_internals.py, `HookedWorker.dequeue_job_and_maintain_ttl`).
"""

import redis

from core import keys


def paused(conn: redis.Redis) -> set[str]:
    """The names of the paused queues."""
    return {name.decode() if isinstance(name, bytes) else str(name) for name in conn.smembers(keys.PAUSED_QUEUES)}


def pause(conn: redis.Redis, queue_name: str) -> None:
    conn.sadd(keys.PAUSED_QUEUES, queue_name)


def resume(conn: redis.Redis, queue_name: str) -> None:
    conn.srem(keys.PAUSED_QUEUES, queue_name)
