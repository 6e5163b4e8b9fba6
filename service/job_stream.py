"""A job's live events (docs/api.md: GET /v1/jobs/{id}/events): what the stream sends, and the ids it sends it under.

Event ids: one counter per job (`keys.event_ids`), bumped by whoever first OBSERVES a change, never by the writers.
Each time a stream reads the job, one Lua call compares a digest of the Job JSON (and the `at` stamp of the job's
latest preview) with the digests stored beside the counter: a new digest takes the next value of the counter, a
known one keeps the id it was given. So the same snapshot has the same id in every stream and every API process,
ids only grow, and a change made by anyone (the worker, RQ itself, a cancel, the reaper, the queue moving) is seen
without each of them having to count it. A client that reconnects with `Last-Event-ID: N` gets the current
snapshot (or preview) only if its id is above N: an id at or below N is one it saw, or one older than what it saw.
"""

import hashlib
import json
import logging
import time
from base64 import b64encode
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any, cast

import redis
from sse_starlette import ServerSentEvent
from starlette.concurrency import run_in_threadpool

from core import keys
from core.errors import NotFound
from core.job_state import to_view
from core.schemas.responses import TERMINAL
from service.events import JobEvents
from service.jobs import JobRepo

log = logging.getLogger(__name__)
SEP = "\n"

# KEYS[1]: the job's event-id hash. ARGV: the Job's digest, the preview's digest ("" if none), the hash's TTL.
# Returns {the Job's id, the preview's id (0 if none)}.
OBSERVE = """
local function id_of(name, digest)
  if digest == '' then return 0 end
  if redis.call('HGET', KEYS[1], name) == digest then
    return tonumber(redis.call('HGET', KEYS[1], name .. ':id'))
  end
  local id = redis.call('HINCRBY', KEYS[1], 'last', 1)
  redis.call('HSET', KEYS[1], name, digest, name .. ':id', id)
  return id
end
local ids = {id_of('job', ARGV[1]), id_of('preview', ARGV[2])}
redis.call('EXPIRE', KEYS[1], ARGV[3])
return ids
"""


@dataclass(frozen=True)
class Snapshot:
    """The job as a stream reads it: the Job JSON and its event id, and its latest preview (if newer than `after`)."""

    job_json: str
    job_event_id: int
    terminal: bool
    preview: dict[str, Any] | None
    preview_event_id: int


class JobStream:
    def __init__(self, repo: JobRepo, conn: redis.Redis, ttl_s: int) -> None:
        self.repo = repo
        self.conn = conn
        self.ttl_s = ttl_s
        self._observe = conn.register_script(OBSERVE)

    def read(self, owner: str, job_id: str, after: int) -> Snapshot:
        """The job now (NotFound when it is not the owner's, or expired); the preview's PNG is read only when the
        preview is newer than `after` and the job still running."""
        view = to_view(self.repo.fetch(owner, job_id))
        job_json = view.model_dump_json()
        terminal = view.status in TERMINAL
        at = cast(bytes | None, self.conn.hget(keys.preview(job_id), "at"))
        preview_digest = "" if terminal or at is None else at.decode()
        job_digest = hashlib.sha256(job_json.encode()).hexdigest()
        args: list[str | int] = [job_digest, preview_digest, self.ttl_s]
        job_event_id, preview_event_id = cast(list[int], self._observe(keys=[keys.event_ids(job_id)], args=args))
        preview = self._preview(job_id) if preview_event_id > after else None
        return Snapshot(job_json, int(job_event_id), terminal, preview, int(preview_event_id))

    def _preview(self, job_id: str) -> dict[str, Any] | None:
        """The `preview` event's data (a newer preview than the one observed, at worst: the next read sends it too)."""
        fields = ["stage", "step", "total", "png"]
        stage, step, total, png = cast(list[bytes | None], self.conn.hmget(keys.preview(job_id), fields))
        if stage is None or step is None or total is None or png is None:
            return None  # expired between the two reads
        return {
            "job_id": job_id,
            "stage": stage.decode(),
            "step": int(step),
            "total": int(total),
            "media_type": "image/png",
            "data_url": "data:image/png;base64," + b64encode(png).decode(),
        }


def frame(event_id: int, event: str, data: str) -> ServerSentEvent:
    return ServerSentEvent(data, event=event, id=str(event_id), sep=SEP)


def news(snap: Snapshot, last_id: int, first: bool) -> list[tuple[int, ServerSentEvent]]:
    """What of `snap` the client has not seen (ids above `last_id`), in id order. On a connection's first send the Job
    comes first: a preview older than it (seen by another stream before) waits for the next one."""
    out = []
    if snap.job_event_id > last_id:
        out.append((snap.job_event_id, frame(snap.job_event_id, "job", snap.job_json)))
    older_than_first_job = first and out and snap.preview_event_id < snap.job_event_id
    if snap.preview is not None and snap.preview_event_id > last_id and not older_than_first_job:
        data = json.dumps(snap.preview, separators=(",", ":"))
        out.append((snap.preview_event_id, frame(snap.preview_event_id, "preview", data)))
    return sorted(out, key=lambda pair: pair[0])


async def job_events(
    stream: JobStream, events: JobEvents, owner: str, job_id: str, last_id: int, keepalive_s: float
) -> AsyncIterator[ServerSentEvent]:
    """The job's events: the Job first (unless the client saw it: `last_id`, 0 for none), then each change and each
    newer preview in id order, `: keep-alive` after `keepalive_s` with nothing sent; ends after the terminal Job.

    Ends early, for the client to reconnect, when the job expires or Redis fails under it."""
    quiet_since = time.monotonic()
    first = True
    with events.watch(job_id) as changed:  # registered before each read: no change between the read and the wait
        while True:
            try:
                snap = await run_in_threadpool(stream.read, owner, job_id, last_id)
            except NotFound:
                return
            except redis.RedisError as exc:
                log.warning("job=%s event stream ends: %s", job_id, exc)
                return
            out = news(snap, last_id, first)
            for event_id, event in out:
                yield event
                last_id = event_id
                quiet_since = time.monotonic()
            first = first and not out
            if snap.terminal and snap.job_event_id <= last_id:
                return
            if time.monotonic() - quiet_since >= keepalive_s:
                yield ServerSentEvent(comment="keep-alive", sep=SEP)
                quiet_since = time.monotonic()
            await events.wait(changed, keepalive_s - (time.monotonic() - quiet_since))
