"""A typed Python client of the HTTP API (docs/api.md): `Client` (blocking) and `AsyncClient` (asyncio), on httpx.

Answers are the service's own response models (`core.schemas.responses`), so client and server share one
definition; errors are the classes of `diffusion_jobs.client_errors`, a job's live events the streams of
`diffusion_jobs.client_events` (re-exported here). The server is `base_url`, else
`DIFFUSION_JOBS_URL` (default http://127.0.0.1:8000); the key is `api_key`, else `DIFFUSION_JOBS_KEY`.

    with Client() as c:
        job = c.wait(c.submit("sample", model="mnist-ddpm", prompt="7", n=4), raise_on_failure=True)
        c.download(job, dest="out")
"""

import asyncio
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx

from core.schemas.responses import TERMINAL, Group, Job, JobList, Model, ModelList, Upload
from diffusion_jobs.client_errors import JobFailed, JobTimeout, error_from
from diffusion_jobs.client_events import RESUME_S as RESUME_S
from diffusion_jobs.client_events import RETRY_S as RETRY_S
from diffusion_jobs.client_events import STREAM_TIMEOUT as STREAM_TIMEOUT
from diffusion_jobs.client_events import AsyncEventStream, Event, EventStream, Preview
from diffusion_jobs.client_events import is_final as is_final
from diffusion_jobs.client_events import parse_event as parse_event

__all__ = ["AsyncClient", "AsyncEventStream", "Client", "Event", "EventStream", "Group", "Job", "Preview"]

DEFAULT_URL = "http://127.0.0.1:8000"
MAX_WAIT_S = 60  # the API's cap on one `?wait=`
GROUP_POLL_S = 0.5  # how often `wait_group` reads a group

JobRef = Job | str
GroupRef = Group | str
OnGroup = Callable[[Group], None]
ImageData = bytes | str | os.PathLike[str]


def job_id(job: JobRef) -> str:
    return job if isinstance(job, str) else job.id


def job_body(kind_or_body: str | dict[str, Any], model: str | None, params: dict[str, Any]) -> dict[str, Any]:
    """`submit("noise", model=..., sigmas=[...])` or `submit({"kind": "noise", ...})` as one request body."""
    body = {"kind": kind_or_body} if isinstance(kind_or_body, str) else dict(kind_or_body)
    if model is not None:
        body["model"] = model
    return {**body, **params}


def submit_headers(idempotency_key: str | None, wait: float | None) -> dict[str, str]:
    headers = {"Idempotency-Key": idempotency_key} if idempotency_key else {}
    if wait:
        headers["Prefer"] = f"wait={wait:g}"
    return headers


def checked(response: httpx.Response) -> httpx.Response:
    if response.is_error:
        raise error_from(response)
    return response


def upload_file(data: ImageData) -> tuple[str, bytes]:
    """The multipart `file` of an upload; the server tells PNG, JPEG and WebP apart by their bytes."""
    if isinstance(data, bytes):
        return "image", data
    path = Path(data)
    return path.name, path.read_bytes()


def finished(job: Job, raise_on_failure: bool) -> Job:
    if raise_on_failure and job.status in ("failed", "canceled", "timed_out"):
        raise JobFailed(job)
    return job


def group_id(group: GroupRef) -> str:
    return group if isinstance(group, str) else group.id


def group_body(jobs: list[dict[str, Any]], webhook: str | None) -> dict[str, Any]:
    return {"jobs": jobs, **({"webhook": webhook} if webhook else {})}


def group_left(group: Group, deadline: float | None, timeout: float | None) -> float:
    """Seconds until the next read of a group still running; TimeoutError past `timeout`."""
    if deadline is not None and time.monotonic() >= deadline:
        left = group.total - ended(group)
        raise TimeoutError(f"group {group.id} has {left} of {group.total} jobs left after {timeout:g} s")
    return GROUP_POLL_S if deadline is None else max(0.0, min(GROUP_POLL_S, deadline - time.monotonic()))


def ended(group: Group) -> int:
    """The group's members that have ended (expired ones included)."""
    return group.expired + sum(n for status, n in group.counts.items() if status in TERMINAL)


def artifact_path(job: JobRef, name: str) -> str:
    return f"/v1/jobs/{job_id(job)}/artifacts/{name}"


class _Base:
    def __init__(self, base_url: str | None, api_key: str | None, timeout: float) -> None:
        self.timeout = timeout  # seconds of every request but waits, which add their own
        self.base_url = (base_url or os.environ.get("DIFFUSION_JOBS_URL") or DEFAULT_URL).rstrip("/")
        key = api_key if api_key is not None else os.environ.get("DIFFUSION_JOBS_KEY")
        self.headers = {"Authorization": f"Bearer {key}"} if key else {}


class Client(_Base):
    """The API, blocking. Use as a context manager, or call `close()`."""

    def __init__(self, base_url: str | None = None, api_key: str | None = None, timeout: float = 30) -> None:
        super().__init__(base_url, api_key, timeout)
        self.http = httpx.Client(base_url=self.base_url, headers=self.headers, timeout=timeout)

    def __enter__(self) -> "Client":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self.http.close()

    def submit(
        self,
        kind_or_body: str | dict[str, Any],
        *,
        model: str | None = None,
        idempotency_key: str | None = None,
        wait: float | None = None,
        **params: Any,
    ) -> Job:
        """Posts a job (`wait`: hold the answer up to that many seconds until it ends)."""
        headers = submit_headers(idempotency_key, wait)
        body = job_body(kind_or_body, model, params)
        response = self.http.post("/v1/jobs", json=body, headers=headers, timeout=self.timeout + (wait or 0))
        return Job.model_validate_json(checked(response).content)

    def get(self, job: JobRef, wait: float | None = None) -> Job:
        """The job's state (`wait`: hold the request up to that many seconds, at most 60, until it ends)."""
        params = {"wait": wait} if wait else None
        timeout = self.timeout + (wait or 0)
        response = self.http.get(f"/v1/jobs/{job_id(job)}", params=params, timeout=timeout)
        return Job.model_validate_json(checked(response).content)

    def wait(self, job: JobRef, timeout: float | None = None, *, raise_on_failure: bool = False) -> Job:
        """The job once it ends, long-polling; `JobTimeout` past `timeout` seconds, `JobFailed` on failure or
        cancel when `raise_on_failure`."""
        deadline = None if timeout is None else time.monotonic() + timeout
        current = self.get(job)
        while current.status not in TERMINAL:
            left = MAX_WAIT_S if deadline is None else min(MAX_WAIT_S, deadline - time.monotonic())
            if left <= 0:
                raise JobTimeout(current, timeout or 0)
            current = self.get(current, wait=max(0.1, round(left, 1)))
        return finished(current, raise_on_failure)

    def cancel(self, job: JobRef) -> Job:
        return Job.model_validate_json(checked(self.http.delete(f"/v1/jobs/{job_id(job)}")).content)

    def submit_group(
        self, jobs: list[dict[str, Any]], webhook: str | None = None, idempotency_key: str | None = None
    ) -> Group:
        """Posts jobs (each a body of POST /v1/jobs) as one group: all are queued, or none (docs/api.md, "Groups");
        with `idempotency_key`, a retry of the same body answers the group the first made."""
        headers = submit_headers(idempotency_key, None)
        response = self.http.post("/v1/groups", json=group_body(jobs, webhook), headers=headers)
        return Group.model_validate_json(checked(response).content)

    def get_group(self, group: GroupRef) -> Group:
        return Group.model_validate_json(checked(self.http.get(f"/v1/groups/{group_id(group)}")).content)

    def cancel_group(self, group: GroupRef) -> Group:
        """Cancels every job of the group that has not ended."""
        return Group.model_validate_json(checked(self.http.delete(f"/v1/groups/{group_id(group)}")).content)

    def wait_group(self, group: GroupRef, timeout: float | None = None, on_progress: OnGroup | None = None) -> Group:
        """The group once every job has ended, read every GROUP_POLL_S; `on_progress` gets each read;
        TimeoutError past `timeout` seconds (the jobs go on)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        current = self.get_group(group)
        while True:
            if on_progress is not None:
                on_progress(current)
            if current.done:
                return current
            time.sleep(group_left(current, deadline, timeout))
            current = self.get_group(current)

    def jobs(
        self, status: str | None = None, kind: str | None = None, limit: int | None = None, cursor: str | None = None
    ) -> JobList:
        """One page of the caller's jobs, newest first; `next_cursor` fetches the next."""
        query = {k: v for k, v in {"status": status, "kind": kind, "limit": limit, "cursor": cursor}.items() if v}
        return JobList.model_validate_json(checked(self.http.get("/v1/jobs", params=query)).content)

    def models(self) -> list[Model]:
        return ModelList.model_validate_json(checked(self.http.get("/v1/models")).content).models

    def model(self, model_id: str) -> Model:
        return Model.model_validate_json(checked(self.http.get(f"/v1/models/{model_id}")).content)

    def upload(self, data: ImageData) -> Upload:
        """Stores an image (a path or its bytes) for jobs: `{"upload_id": upload.id}`."""
        response = self.http.post("/v1/uploads", files={"file": upload_file(data)})
        return Upload.model_validate_json(checked(response).content)

    def download(self, job: JobRef, name: str | None = None, dest: str | os.PathLike[str] = ".") -> list[Path]:
        """Saves the artifact `name` (every artifact when None) into the folder `dest`; the paths written."""
        names = [name] if name else [a.name for a in (job if isinstance(job, Job) else self.get(job)).artifacts]
        folder = Path(dest)
        folder.mkdir(parents=True, exist_ok=True)
        for each in names:
            with self.http.stream("GET", artifact_path(job, each)) as response:
                if response.is_error:
                    response.read()
                    raise error_from(response)
                with (folder / each).open("wb") as out:
                    for chunk in response.iter_bytes():
                        out.write(chunk)
        return [folder / each for each in names]

    def events(self, job: JobRef, last_event_id: int | None = None) -> EventStream:
        """The job's live events until it ends (`last_event_id`: resume after an event already seen)."""
        return EventStream(self, job_id(job), last_event_id)


class AsyncClient(_Base):
    """The API, for asyncio. Use as an async context manager, or await `aclose()`."""

    def __init__(self, base_url: str | None = None, api_key: str | None = None, timeout: float = 30) -> None:
        super().__init__(base_url, api_key, timeout)
        self.http = httpx.AsyncClient(base_url=self.base_url, headers=self.headers, timeout=timeout)

    async def __aenter__(self) -> "AsyncClient":
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self.http.aclose()

    async def submit(
        self,
        kind_or_body: str | dict[str, Any],
        *,
        model: str | None = None,
        idempotency_key: str | None = None,
        wait: float | None = None,
        **params: Any,
    ) -> Job:
        """Posts a job (`wait`: hold the answer up to that many seconds until it ends)."""
        headers = submit_headers(idempotency_key, wait)
        body = job_body(kind_or_body, model, params)
        timeout = self.timeout + (wait or 0)
        response = await self.http.post("/v1/jobs", json=body, headers=headers, timeout=timeout)
        return Job.model_validate_json(checked(response).content)

    async def get(self, job: JobRef, wait: float | None = None) -> Job:
        params = {"wait": wait} if wait else None
        timeout = self.timeout + (wait or 0)
        response = await self.http.get(f"/v1/jobs/{job_id(job)}", params=params, timeout=timeout)
        return Job.model_validate_json(checked(response).content)

    async def wait(self, job: JobRef, timeout: float | None = None, *, raise_on_failure: bool = False) -> Job:
        """As `Client.wait`."""
        deadline = None if timeout is None else time.monotonic() + timeout
        current = await self.get(job)
        while current.status not in TERMINAL:
            left = MAX_WAIT_S if deadline is None else min(MAX_WAIT_S, deadline - time.monotonic())
            if left <= 0:
                raise JobTimeout(current, timeout or 0)
            current = await self.get(current, wait=max(0.1, round(left, 1)))
        return finished(current, raise_on_failure)

    async def cancel(self, job: JobRef) -> Job:
        return Job.model_validate_json(checked(await self.http.delete(f"/v1/jobs/{job_id(job)}")).content)

    async def submit_group(
        self, jobs: list[dict[str, Any]], webhook: str | None = None, idempotency_key: str | None = None
    ) -> Group:
        """As `Client.submit_group`."""
        headers = submit_headers(idempotency_key, None)
        response = await self.http.post("/v1/groups", json=group_body(jobs, webhook), headers=headers)
        return Group.model_validate_json(checked(response).content)

    async def get_group(self, group: GroupRef) -> Group:
        return Group.model_validate_json(checked(await self.http.get(f"/v1/groups/{group_id(group)}")).content)

    async def cancel_group(self, group: GroupRef) -> Group:
        return Group.model_validate_json(checked(await self.http.delete(f"/v1/groups/{group_id(group)}")).content)

    async def wait_group(
        self, group: GroupRef, timeout: float | None = None, on_progress: OnGroup | None = None
    ) -> Group:
        """As `Client.wait_group`."""
        deadline = None if timeout is None else time.monotonic() + timeout
        current = await self.get_group(group)
        while True:
            if on_progress is not None:
                on_progress(current)
            if current.done:
                return current
            await asyncio.sleep(group_left(current, deadline, timeout))
            current = await self.get_group(current)

    async def jobs(
        self, status: str | None = None, kind: str | None = None, limit: int | None = None, cursor: str | None = None
    ) -> JobList:
        query = {k: v for k, v in {"status": status, "kind": kind, "limit": limit, "cursor": cursor}.items() if v}
        return JobList.model_validate_json(checked(await self.http.get("/v1/jobs", params=query)).content)

    async def models(self) -> list[Model]:
        return ModelList.model_validate_json(checked(await self.http.get("/v1/models")).content).models

    async def model(self, model_id: str) -> Model:
        return Model.model_validate_json(checked(await self.http.get(f"/v1/models/{model_id}")).content)

    async def upload(self, data: ImageData) -> Upload:
        response = await self.http.post("/v1/uploads", files={"file": upload_file(data)})
        return Upload.model_validate_json(checked(response).content)

    async def download(self, job: JobRef, name: str | None = None, dest: str | os.PathLike[str] = ".") -> list[Path]:
        """As `Client.download`."""
        names = [name] if name else [a.name for a in (job if isinstance(job, Job) else await self.get(job)).artifacts]
        folder = Path(dest)
        folder.mkdir(parents=True, exist_ok=True)
        for each in names:
            async with self.http.stream("GET", artifact_path(job, each)) as response:
                if response.is_error:
                    await response.aread()
                    raise error_from(response)
                with (folder / each).open("wb") as out:
                    async for chunk in response.aiter_bytes():
                        out.write(chunk)
        return [folder / each for each in names]

    def events(self, job: JobRef, last_event_id: int | None = None) -> AsyncEventStream:
        """As `Client.events`: `async for event in client.events(job)`."""
        return AsyncEventStream(self, job_id(job), last_event_id)
