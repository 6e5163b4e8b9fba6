"""Jobs: submit, read (optionally waiting), list, cancel, and download artifacts."""

import re
import time
from typing import Annotated

from fastapi import APIRouter, Body, Depends, Header, Path, Query, Request, Response
from pydantic import BaseModel
from starlette.concurrency import run_in_threadpool

from core import kinds
from core.errors import NotFound
from core.job_state import artifact_key, to_view
from core.kinds.base import JobBase
from core.kinds.train import TrainJob
from core.model_registry import ModelRegistry
from core.schemas.responses import TERMINAL, Job, JobList, Status
from service.admission import admit
from service.deps import Conn, Events, Models, Owner, Repo, SettingsDep, Store
from service.error_docs import AUTHED, error_responses
from service.jobs import JobRepo, body_digest
from service.routes import BEARER
from service.webhooks import check_enabled

JobRequest = kinds.request_type()  # every registered kind's request (EXTRA_KINDS included), one union on `kind`
EXAMPLES = {name: {"value": example} for name, example in kinds.examples().items()}
router = APIRouter(prefix="/v1/jobs", tags=["jobs"], dependencies=BEARER, responses=error_responses(*AUTHED, 422))
PREFER_WAIT = re.compile(r"(?:^|[,;\s])wait=(\d+(?:\.\d+)?)")
JOB_ID = re.compile(r"[A-Za-z0-9_-]+")  # the only ids RQ looks up; no job has any other
LOCATION = {"Location": {"description": "/v1/jobs/{id}", "schema": {"type": "string"}, "required": True}}


async def job_id_of(job_id: str) -> str:
    """The path's job id; one that no job can have is unknown at once (docs/api.md: 404)."""
    if not JOB_ID.fullmatch(job_id):
        raise NotFound(f"No job {job_id!r} of yours exists; job ids are the ones POST /v1/jobs answered.")
    return job_id


JobId = Annotated[str, Depends(job_id_of)]
ArtifactName = Annotated[str, Path(description="an artifact of the job", examples=["image_0.png", "grid.png"])]


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


def json_response(model: BaseModel, status_code: int = 200, headers: dict[str, str] | None = None) -> Response:
    """The body serialised once by pydantic (FastAPI would validate a returned model again)."""
    return Response(model.model_dump_json(), status_code=status_code, headers=headers, media_type="application/json")


def admit_and_create(
    repo: JobRepo,
    conn: Conn,
    models: Models,
    owner: str,
    job: JobBase,
    settings: SettingsDep,
    idempotency_key: str | None,
    body: bytes,
) -> Job:
    """Everything a submission does in Redis, in one trip to the thread pool."""
    check_enabled(job, settings.webhook_secret)
    pool = admit(conn, models, owner, job, settings)
    claim = None
    if isinstance(job, TrainJob):
        name = job.name
        claim = lambda job_id: ModelRegistry(conn).claim(owner, name, job_id, set(models))  # noqa: E731
    created, _ = repo.create(owner, job, pool, idempotency_key, body_digest(body), claim)
    return to_view(created)


@router.post(
    "",
    status_code=202,
    response_model=Job,
    responses={
        202: {"headers": LOCATION},
        200: {"model": Job, "description": "The job ended within `Prefer: wait`.", "headers": LOCATION},
        **error_responses(400, 403, 409, 413, 415),
    },
)
async def submit_job(
    request: Request,
    job: Annotated[JobRequest, Body(openapi_examples=EXAMPLES)],  # type: ignore[valid-type]
    owner: Owner,
    repo: Repo,
    conn: Conn,
    models: Models,
    events: Events,
    settings: SettingsDep,
    idempotency_key: Annotated[str | None, Header(max_length=255)] = None,
    prefer: Annotated[str | None, Header()] = None,
) -> Response:
    body = await request.body()
    view = await run_in_threadpool(admit_and_create, repo, conn, models, owner, job, settings, idempotency_key, body)
    headers = {"Location": f"/v1/jobs/{view.id}"}
    wait = PREFER_WAIT.search(prefer or "")
    if wait and view.status not in TERMINAL:
        headers["Preference-Applied"] = f"wait={wait.group(1)}"
        view = await wait_for_end(repo, events, owner, view.id, min(float(wait.group(1)), settings.max_wait_s))
    return json_response(view, 200 if view.status in TERMINAL else 202, headers)


@router.get("", response_model=JobList)
async def list_jobs(
    owner: Owner,
    repo: Repo,
    settings: SettingsDep,
    status: Status | None = None,
    kind: Annotated[str | None, Query(pattern="^(" + "|".join(kinds.names()) + ")$")] = None,
    limit: Annotated[int, Query(ge=1, le=100)] = 20,
    cursor: Annotated[str | None, Query(max_length=200)] = None,
) -> JobList:
    jobs, next_cursor = await run_in_threadpool(repo.find, owner, status, kind, limit, cursor)
    return JobList(jobs=[to_view(j) for j in jobs], next_cursor=next_cursor)


@router.get("/{job_id}", response_model=Job, responses=error_responses(404))
async def get_job(
    job_id: JobId,
    owner: Owner,
    repo: Repo,
    events: Events,
    settings: SettingsDep,
    wait: Annotated[float, Query(ge=0, le=60, description="seconds to hold the request until the job ends")] = 0,
) -> Response:
    if wait:
        return json_response(await wait_for_end(repo, events, owner, job_id, min(wait, settings.max_wait_s)))
    return json_response(await run_in_threadpool(lambda: to_view(repo.fetch(owner, job_id))))


@router.delete("/{job_id}", status_code=202, response_model=Job, responses=error_responses(404))
async def cancel_job(job_id: JobId, owner: Owner, repo: Repo) -> Job:
    return to_view(await run_in_threadpool(repo.cancel, owner, job_id))


@router.post("/{job_id}/resume", status_code=202, response_model=Job, responses=error_responses(404, 409))
async def resume_job(job_id: JobId, owner: Owner, repo: Repo, models: Models) -> Job:
    """A train job that timed out or failed, queued again: it goes on after its last finished epoch
    (docs/operations/scaling.md, "Time limits")."""
    return to_view(await run_in_threadpool(repo.resume, owner, job_id, set(models)))


@router.get(
    "/{job_id}/artifacts/{name}",
    response_class=Response,
    responses={
        200: {"content": {"image/png": {}, "image/gif": {}, "application/octet-stream": {}}},
        **error_responses(404),
    },
)
async def get_artifact(job_id: JobId, name: ArtifactName, owner: Owner, repo: Repo, store: Store) -> Response:
    job = await run_in_threadpool(repo.fetch, owner, job_id)
    key = artifact_key(job, name)
    blob = await run_in_threadpool(store.get, key) if key else None
    if blob is None:
        raise NotFound(f"Job {job_id} has no artifact {name!r} (artifacts expire after their time-to-live).")
    return Response(blob.data, media_type=blob.media_type, headers={"Cache-Control": "private, max-age=3600"})
