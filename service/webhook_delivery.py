"""The deliverer: a background task of every API process that POSTs the outbox's records (service/webhooks.py).

Up to `CONCURRENCY` POSTs at once, so one slow receiver does not hold up the others; one job's POSTs go one at a
time, in the order they were claimed (`start` before `progress` unless a retry intervenes). A failed try (no
connection, a timeout, an answer other than 2xx) is retried after `WEBHOOK_BACKOFF_S`, doubling each time, until
`WEBHOOK_MAX_ATTEMPTS` tries; then the record is dropped with a log line. A `completed` record whose job does not
read as ended yet (the worker announces a failure RQ will not retry just before RQ records it) waits a moment first.
"""

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import AsyncIterator
from typing import Any

import httpx
import redis
import redis.asyncio as aredis
from opentelemetry.trace import SpanKind, StatusCode
from redis.exceptions import RedisError
from rq.exceptions import NoSuchJobError
from rq.job import Job as RQJob
from rq.serializers import JSONSerializer
from starlette.concurrency import run_in_threadpool

from core import keys
from core.groups import GROUP_EVENT
from core.job_state import to_view
from core.schemas.responses import TERMINAL
from core.settings import Settings
from core.tracing import extract, inject, tracer
from service.groups import group_body
from service.webhooks import CLAIM, RESCHEDULE, signed_headers

log = logging.getLogger(__name__)
CONCURRENCY = 16
IDLE_S = 0.2  # how often an idle deliverer looks for work
END_WAIT_S = 0.5  # how long a `completed` record whose job has not ended yet waits, up to END_WAITS times
END_WAITS = 20
ENDINGS = {"completed": TERMINAL, GROUP_EVENT: frozenset({"completed"})}  # an end's event: the statuses it waits for


def job_body(conn: redis.Redis, job_id: str) -> tuple[str, str, bytes] | None:
    """The job's webhook URL, status and Job JSON, as GET /v1/jobs/{id} answers it; None if it is gone."""
    try:
        job = RQJob.fetch(job_id, connection=conn, serializer=JSONSerializer)
    except NoSuchJobError:
        return None
    view = to_view(job)
    return str(view.params["webhook"]), view.status, view.model_dump_json().encode()


def subject(record: dict[str, Any]) -> str:
    """The record's job id, or "group:" and its group's id (core/groups.py): its deliveries go one at a time."""
    return str(record["job"]) if "job" in record else f"group:{record['group']}"


def body_of(conn: redis.Redis, record: dict[str, Any]) -> tuple[str, str, bytes] | None:
    """A job's record POSTs the Job, a group's the Group (service/groups.py)."""
    return group_body(conn, record["group"]) if "group" in record else job_body(conn, record["job"])


class Deliverer:
    def __init__(self, conn: redis.Redis, settings: Settings) -> None:
        self.conn = conn
        self.settings = settings
        self.lease_s = 4 * settings.webhook_timeout_s + 5  # past a try's longest: connect, write, read, pool
        url = settings.redis_url or "redis://127.0.0.1:6379/0"
        self.client = aredis.Redis.from_url(url, socket_connect_timeout=settings.redis_timeout_s)
        self.claim = self.client.register_script(CLAIM)
        self.reschedule = self.client.register_script(RESCHEDULE)
        self._jobs: dict[str, tuple[asyncio.Lock, int]] = {}  # job id -> its lock, and the tasks that hold or want it

    async def run(self) -> None:
        """Delivers until canceled; what is in flight then is taken again once its lease runs out."""
        slots = asyncio.Semaphore(CONCURRENCY)
        in_flight: set[asyncio.Task[None]] = set()

        def done(task: asyncio.Task[None]) -> None:
            in_flight.discard(task)
            slots.release()

        try:
            async with httpx.AsyncClient(timeout=self.settings.webhook_timeout_s) as http:
                while True:
                    await slots.acquire()
                    try:
                        raw = await self.claim(keys=[keys.WEBHOOK_OUTBOX, keys.WEBHOOK_PENDING], args=[self.lease_s])
                    except RedisError as exc:
                        log.warning("webhooks: redis unavailable (%s)", exc)
                        raw = None
                    if raw is None:
                        slots.release()
                        await asyncio.sleep(IDLE_S)
                        continue
                    task = asyncio.create_task(self.deliver(http, raw))
                    in_flight.add(task)
                    task.add_done_callback(done)
        finally:
            for task in list(in_flight):
                task.cancel()
            await self.client.aclose()

    async def deliver(self, http: httpx.AsyncClient, raw: bytes) -> None:
        """One try of one record, and what follows from it: done, retried later, or dropped."""
        job_id = event = "?"
        try:
            record: dict[str, Any] = json.loads(raw)
            job_id, event = subject(record), record["event"]
            async with self._in_order(job_id):
                await self._try(http, raw, record)
        except RedisError as exc:  # the record stays pending: it is tried again once its lease runs out
            log.warning("job=%s webhook %s: redis unavailable (%s)", job_id, event, exc)
        except Exception:
            log.exception("job=%s webhook %s dropped: delivering it raised", job_id, event)
            with contextlib.suppress(RedisError):
                await self.client.zrem(keys.WEBHOOK_PENDING, raw)

    @contextlib.asynccontextmanager
    async def _in_order(self, job_id: str) -> AsyncIterator[None]:
        """One of the job's deliveries at a time; asyncio's lock is first come, first served."""
        lock, users = self._jobs.get(job_id, (asyncio.Lock(), 0))
        self._jobs[job_id] = (lock, users + 1)
        try:
            async with lock:
                yield
        finally:
            lock, users = self._jobs[job_id]
            if users == 1:
                del self._jobs[job_id]
            else:
                self._jobs[job_id] = (lock, users - 1)

    async def _try(self, http: httpx.AsyncClient, raw: bytes, record: dict[str, Any]) -> None:
        """Builds the body from the job now, POSTs it, and records the outcome."""
        job_id, event = subject(record), record["event"]
        found = await run_in_threadpool(body_of, self.conn, record)
        if found is None:
            log.warning("job=%s webhook %s dropped: the job is gone", job_id, event)
            await self.client.zrem(keys.WEBHOOK_PENDING, raw)
            return
        url, status, body = found
        if event in ENDINGS and status not in ENDINGS[event] and record["waits"] < END_WAITS:
            await self._later(raw, {**record, "waits": record["waits"] + 1}, END_WAIT_S)
            return
        tries = record["tries"] + 1
        attributes = {"job.id": job_id, "webhook.event": event, "webhook.try": tries}
        with tracer.start_as_current_span("webhook", extract(record.get("trace")), SpanKind.CLIENT, attributes) as span:
            failure = await self._post(http, url, event, record["id"], body)
            span.set_status(StatusCode.ERROR if failure else StatusCode.OK, failure)
        if failure is None:
            log.info("job=%s webhook %s delivered (try %d)", job_id, event, tries)
            await self.client.zrem(keys.WEBHOOK_PENDING, raw)
        elif tries >= self.settings.webhook_max_attempts:
            log.warning("job=%s webhook %s to %s dropped after %d tries: %s", job_id, event, url, tries, failure)
            await self.client.zrem(keys.WEBHOOK_PENDING, raw)
        else:
            delay = self.settings.webhook_backoff_s * 2 ** (tries - 1)
            log.info("job=%s webhook %s try %d failed (%s); again in %.3g s", job_id, event, tries, failure, delay)
            await self._later(raw, {**record, "tries": tries}, delay)

    async def _post(self, http: httpx.AsyncClient, url: str, event: str, delivery: str, body: bytes) -> str | None:
        """Why the POST failed, or None if the receiver took it (2xx)."""
        headers = signed_headers(self.settings.webhook_secret or "", event, delivery, int(time.time()), body)
        headers |= inject()  # `traceparent`, where tracing is on: the receiver may continue the job's trace
        try:
            response = await http.post(url, content=body, headers=headers)
        except (httpx.HTTPError, httpx.InvalidURL) as exc:
            return f"{type(exc).__name__}: {exc}"
        return None if response.is_success else f"HTTP {response.status_code}"

    async def _later(self, raw: bytes, record: dict[str, Any], delay_s: float) -> None:
        await self.reschedule(keys=[keys.WEBHOOK_PENDING], args=[raw, json.dumps(record), delay_s])
