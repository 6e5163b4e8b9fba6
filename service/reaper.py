"""Finds jobs whose worker died, every few seconds, so they are retried (or failed) within a minute.

RQ's own clean-up of abandoned jobs runs only in a worker's maintenance pass (every 10 minutes by default, and never
while every worker is busy). The API runs it instead, under a lock so that many API processes do it once.
"""

import asyncio
import logging

import redis
from starlette.concurrency import run_in_threadpool

from core import keys
from core.endings import record_endings
from core.events import job_changed
from core.job_state import status_and_error
from core.rq_internals import reap_abandoned
from core.settings import Settings
from service.jobs import fetch_many

log = logging.getLogger(__name__)


def reap_once(conn: redis.Redis, queue_names: list[str], lock_ms: int) -> list[str]:
    """Retries or fails each abandoned job of the queues; returns their ids."""
    if not conn.set(keys.REAPER_LOCK, 1, nx=True, px=lock_ms):
        return []
    reaped: list[str] = []
    for name in queue_names:
        reaped.extend(reap_abandoned(conn, name))
    for job_id in reaped:
        log.warning("job=%s abandoned by its worker; retried or failed", job_id)
        job_changed(conn, job_id)
    if reaped:
        lost = [job for job in fetch_many(conn, reaped) if job is not None and status_and_error(job)[0] == "failed"]
        record_endings(conn, lost, "failed")  # worker_lost on its last attempt
    return reaped


async def run_reaper(conn: redis.Redis, settings: Settings, queue_names: list[str]) -> None:
    lock_ms = int(settings.reaper_interval_s * 1000 * 0.9)
    while True:
        try:
            await run_in_threadpool(reap_once, conn, queue_names, lock_ms)
        except redis.RedisError as exc:
            log.warning("reaper: redis unavailable (%s)", exc)
        await asyncio.sleep(settings.reaper_interval_s)
