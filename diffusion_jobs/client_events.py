"""The client's reader of a job's live events, GET /v1/jobs/{id}/events (docs/api.md): `EventStream` (blocking) and
`AsyncEventStream` (asyncio), what `Client.events` and `AsyncClient.events` return; each event a `Job` snapshot or a
`Preview`. A dropped connection is resumed after the last event yielded (Last-Event-ID), for up to RESUME_S."""

import asyncio
import base64
import time
from collections.abc import AsyncGenerator, AsyncIterator, Generator, Iterator
from typing import TYPE_CHECKING

import httpx
from httpx_sse import ServerSentEvent, aconnect_sse, connect_sse
from pydantic import BaseModel

from core.schemas.responses import TERMINAL, Job
from diffusion_jobs.client_errors import ClientError, error_from

if TYPE_CHECKING:  # the streams' clients; diffusion_jobs.client imports this module
    from diffusion_jobs.client import AsyncClient, Client

RESUME_S = 30  # how long an event stream that dropped is tried again before giving up
RETRY_S = 0.5  # between two tries
STREAM_TIMEOUT = httpx.Timeout(10, read=60)  # the server sends a keep-alive well within a minute


class Preview(BaseModel):
    """A `preview` event: a small PNG of the job's current clean-image estimates."""

    job_id: str
    stage: str
    step: int
    total: int
    media_type: str
    data_url: str

    @property
    def png(self) -> bytes:
        return base64.b64decode(self.data_url.split(",", 1)[1])


Event = Job | Preview


def parse_event(sse: ServerSentEvent) -> Event | None:
    """A `job` or `preview` event; None for any other (a newer server's), which a client skips."""
    if sse.event == "job":
        return Job.model_validate_json(sse.data)
    if sse.event == "preview":
        return Preview.model_validate_json(sse.data)
    return None


class _Stream:
    """What both event streams keep: the job, the id of the last event yielded, when the last one came."""

    def __init__(self, job_id: str, last_event_id: int | None) -> None:
        self.job_id = job_id
        self.last_event_id = last_event_id
        self.path = f"/v1/jobs/{job_id}/events"
        self.heard = time.monotonic()

    def headers(self) -> dict[str, str]:
        return {"Last-Event-ID": str(self.last_event_id)} if self.last_event_id is not None else {}

    def accept(self, sse: ServerSentEvent) -> Event | None:
        """The event of a frame (None for a kind this client does not know), its id remembered."""
        self.last_event_id = int(sse.id) if sse.id else self.last_event_id
        self.heard = time.monotonic()
        return parse_event(sse)

    def give_up(self, cause: Exception | None) -> None:
        """Raises when the stream has been down for RESUME_S; else the caller retries after RETRY_S."""
        if time.monotonic() - self.heard < RESUME_S:
            return
        if cause is not None:
            raise cause
        raise ClientError(f"the event stream of job {self.job_id} kept closing before its end")


def is_final(event: Event | None) -> bool:
    """Whether `event` is the job's terminal snapshot, the last event of its stream."""
    return isinstance(event, Job) and event.status in TERMINAL


class EventStream(_Stream):
    """The job's events (Job snapshots and previews) until its terminal Job, as an iterator. A dropped connection
    is resumed after `last_event_id` (the last one yielded), so nothing comes twice; `close()` stops early."""

    def __init__(self, client: "Client", job_id: str, last_event_id: int | None) -> None:
        super().__init__(job_id, last_event_id)
        self.client = client
        self._events = self._run()

    def __iter__(self) -> Iterator[Event]:
        return self

    def __next__(self) -> Event:
        return next(self._events)

    def close(self) -> None:
        self._events.close()

    def _run(self) -> Generator[Event, None, None]:
        while True:
            try:
                with connect_sse(
                    self.client.http, "GET", self.path, headers=self.headers(), timeout=STREAM_TIMEOUT
                ) as source:
                    if source.response.is_error:
                        source.response.read()
                        raise error_from(source.response)
                    for sse in source.iter_sse():
                        if (event := self.accept(sse)) is not None:
                            yield event
                        if is_final(event):
                            return
                # closed before the end: the end was seen already (Last-Event-ID), or the server went away
                if self.client.get(self.job_id).status in TERMINAL:
                    return
                self.give_up(None)
            except httpx.TransportError as exc:
                self.give_up(exc)
            time.sleep(RETRY_S)


class AsyncEventStream(_Stream):
    """As `EventStream`, for `async for`; `aclose()` stops early."""

    def __init__(self, client: "AsyncClient", job_id: str, last_event_id: int | None) -> None:
        super().__init__(job_id, last_event_id)
        self.client = client
        self._events = self._run()

    def __aiter__(self) -> AsyncIterator[Event]:
        return self

    async def __anext__(self) -> Event:
        return await anext(self._events)

    async def aclose(self) -> None:
        await self._events.aclose()

    async def _run(self) -> AsyncGenerator[Event, None]:
        while True:
            try:
                async with aconnect_sse(
                    self.client.http, "GET", self.path, headers=self.headers(), timeout=STREAM_TIMEOUT
                ) as source:
                    if source.response.is_error:
                        await source.response.aread()
                        raise error_from(source.response)
                    async for sse in source.aiter_sse():
                        if (event := self.accept(sse)) is not None:
                            yield event
                        if is_final(event):
                            return
                if (await self.client.get(self.job_id)).status in TERMINAL:
                    return
                self.give_up(None)
            except httpx.TransportError as exc:
                self.give_up(exc)
            await asyncio.sleep(RETRY_S)
