"""Administration (docs/operations/administration.md): workers, queues, pause and resume, retries. Admin keys only."""

from typing import Annotated

from fastapi import APIRouter, Body, Depends, Path
from pydantic import BaseModel, Field
from starlette.concurrency import run_in_threadpool

from core.job_state import to_view
from core.schemas.responses import Job
from service import admin
from service.admin import QueueList, QueueView, Requeued, WorkerList
from service.deps import Conn, Owner, SettingsDep
from service.error_docs import AUTHED, error_responses
from service.routes import BEARER
from service.routes.jobs import JobId


async def admin_of(owner: Owner, settings: SettingsDep) -> str:
    """The caller, who must hold an admin key (403 otherwise)."""
    admin.require_admin(owner, settings)
    return owner


router = APIRouter(
    prefix="/v1/admin",
    tags=["admin"],
    dependencies=[*BEARER, Depends(admin_of)],
    responses=error_responses(*AUTHED, 403, 422),
)
QueueName = Annotated[str, Path(description="a queue of GET /v1/admin/queues", examples=["mnist", "mnist-high"])]


class RequeueBody(BaseModel):
    ids: list[str] | None = Field(default=None, description="only these jobs of the failed registry; all if absent")


@router.get("/workers", response_model=WorkerList)
async def list_workers(conn: Conn) -> WorkerList:
    """Every RQ worker registered: host, pid, queues, state, current job, last heartbeat, GPU."""
    return await run_in_threadpool(admin.list_workers, conn)


@router.get("/queues", response_model=QueueList)
async def list_queues(conn: Conn) -> QueueList:
    """Every queue of every pool: jobs waiting, running, failed, deferred and scheduled, and whether it is paused."""
    return await run_in_threadpool(admin.list_queues, conn)


@router.post("/queues/{name}/pause", response_model=QueueView, responses=error_responses(404))
async def pause_queue(name: QueueName, conn: Conn) -> QueueView:
    """Workers take no new job from the queue: the jobs in hand finish, queued ones wait, submissions still queue."""
    return await run_in_threadpool(admin.set_paused, conn, name, True)


@router.post("/queues/{name}/resume", response_model=QueueView, responses=error_responses(404))
async def resume_queue(name: QueueName, conn: Conn) -> QueueView:
    return await run_in_threadpool(admin.set_paused, conn, name, False)


@router.post("/queues/{name}/requeue-failed", response_model=Requeued, responses=error_responses(400, 404, 409, 413))
async def requeue_failed(name: QueueName, conn: Conn, body: Annotated[RequeueBody | None, Body()] = None) -> Requeued:
    """Every job of the queue's failed registry (or the `ids` given) queued again, at the back of its queue."""
    return await run_in_threadpool(admin.requeue_failed, conn, name, body.ids if body else None)


@router.post("/jobs/{job_id}/retry", response_model=Job, responses=error_responses(404, 409))
async def retry_job(job_id: JobId, conn: Conn) -> Job:
    """A failed or timed_out job of any owner queued again at the back of its own queue (409 for any other)."""
    return to_view(await run_in_threadpool(admin.retry_job, conn, job_id))
