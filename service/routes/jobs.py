"""Jobs: submit, read (optionally waiting), list, cancel, and download artifacts."""

import re
import time
from typing import Annotated

from fastapi import APIRouter, Body, Header, Query, Request, Response
from starlette.concurrency import run_in_threadpool

from service.admission import admit
from service.deps import Conn, Events, Models, Owner, Repo, SettingsDep, Store
from service.errors import NotFound
from service.job_state import artifact_key, to_view
from service.jobs import JobRepo, body_digest
from service.schemas.jobs import KINDS, JobRequest
from service.schemas.responses import TERMINAL, Job, JobList, Status

router = APIRouter(prefix="/v1/jobs", tags=["jobs"])
PREFER_WAIT = re.compile(r"(?:^|[,;\s])wait=(\d+(?:\.\d+)?)")


async def wait_for_end(repo: JobRepo, events: Events, owner: str, job_id: str, wait_s: float) -> Job:
    """The job as soon as it ends, or as it is when `wait_s` runs out."""
    deadline = time.monotonic() + wait_s
    with events.watch(job_id) as changed:
        while True:
            view = to_view(await run_in_threadpool(repo.fetch, owner, job_id))
            remaining = deadline - time.monotonic()
            if view.status in TERMINAL or remaining <= 0:
                return view
            await events.wait(changed, remaining)


@router.post("", status_code=202, response_model=Job, responses={200: {"model": Job}})
async def submit_job(
    request: Request,
    response: Response,
    job: Annotated[JobRequest, Body()],
    owner: Owner,
    repo: Repo,
    conn: Conn,
    models: Models,
    events: Events,
    settings: SettingsDep,
    idempotency_key: Annotated[str | None, Header(max_length=255)] = None,
    prefer: Annotated[str | None, Header()] = None,
) -> Job:
    spec = await run_in_threadpool(admit, conn, models, owner, job, settings.max_image_pixels)
    digest = body_digest(await request.body())
    created, _ = await run_in_threadpool(repo.create, owner, job, spec, idempotency_key, digest)
    response.headers["Location"] = f"/v1/jobs/{created.id}"
    wait = PREFER_WAIT.search(prefer or "")
    if wait:
        wait_s = min(float(wait.group(1)), settings.max_wait_s)
        response.headers["Preference-Applied"] = f"wait={wait.group(1)}"
        view = await wait_for_end(repo, events, owner, created.id, wait_s)
    else:
        view = to_view(created)
    if view.status in TERMINAL:
        response.status_code = 200
    return view


@router.get("", response_model=JobList)
async def list_jobs(
    owner: Owner,
    repo: Repo,
    settings: SettingsDep,
    status: Status | None = None,
    kind: Annotated[str | None, Query(pattern="^(" + "|".join(KINDS) + ")$")] = None,
    limit: Annotated[int, Query(ge=1, le=100)] = 20,
    cursor: Annotated[str | None, Query(max_length=200)] = None,
) -> JobList:
    jobs, next_cursor = await run_in_threadpool(repo.find, owner, status, kind, limit, cursor)
    return JobList(jobs=[to_view(j) for j in jobs], next_cursor=next_cursor)


@router.get("/{job_id}", response_model=Job)
async def get_job(
    job_id: str,
    owner: Owner,
    repo: Repo,
    events: Events,
    wait: Annotated[float, Query(ge=0, le=60, description="seconds to hold the request until the job ends")] = 0,
) -> Job:
    if wait:
        return await wait_for_end(repo, events, owner, job_id, wait)
    return to_view(await run_in_threadpool(repo.fetch, owner, job_id))


@router.delete("/{job_id}", status_code=202, response_model=Job)
async def cancel_job(job_id: str, owner: Owner, repo: Repo) -> Job:
    return to_view(await run_in_threadpool(repo.cancel, owner, job_id))


@router.get(
    "/{job_id}/artifacts/{name}",
    response_class=Response,
    responses={200: {"content": {"image/png": {}, "image/gif": {}, "application/octet-stream": {}}}},
)
async def get_artifact(job_id: str, name: str, owner: Owner, repo: Repo, store: Store) -> Response:
    job = await run_in_threadpool(repo.fetch, owner, job_id)
    key = artifact_key(job, name)
    blob = await run_in_threadpool(store.get, key) if key else None
    if blob is None:
        raise NotFound(f"Job {job_id} has no artifact {name!r} (artifacts expire after their time-to-live).")
    return Response(blob.data, media_type=blob.media_type, headers={"Cache-Control": "private, max-age=3600"})
