"""Liveness and readiness probes."""

from fastapi import APIRouter
from rq import Worker
from starlette.concurrency import run_in_threadpool

from core.errors import Unavailable
from service.deps import Conn
from service.error_docs import error_responses

router = APIRouter(tags=["health"])


@router.get("/healthz")
async def healthz() -> dict[str, str]:
    return {"status": "ok"}


@router.get("/readyz", responses=error_responses(503))
async def readyz(conn: Conn) -> dict[str, object]:
    await run_in_threadpool(conn.ping)
    workers = await run_in_threadpool(Worker.count, conn)
    if workers == 0:
        raise Unavailable("No worker is alive; start one with `diffusion-jobs worker`.", retry_after=5)
    return {"status": "ready", "workers": workers}
