"""GET /v1/usage: what the calling key uses against its quotas (docs/operations/quotas.md)."""

from fastapi import APIRouter
from starlette.concurrency import run_in_threadpool

from core import usage
from core.schemas.responses import Quota, Usage
from service.deps import Conn, Owner, SettingsDep
from service.error_docs import AUTHED, error_responses
from service.routes import BEARER

router = APIRouter(prefix="/v1/usage", tags=["usage"], dependencies=BEARER, responses=error_responses(*AUTHED))


@router.get("", response_model=Usage)
async def get_usage(owner: Owner, conn: Conn, settings: SettingsDep) -> Usage:
    """The key's active jobs (queued plus running), images asked for and seconds run on workers today (UTC), each
    with its limit (null: none)."""
    used = await run_in_threadpool(usage.read, conn, owner)
    return Usage(
        day=usage.today(),
        active_jobs=Quota(used=used.active_jobs, limit=settings.max_active_jobs_per_key or None),
        images_today=Quota(
            used=used.images_today, limit=settings.daily_images_per_key or None, resets_at=usage.next_midnight_iso()
        ),
        gpu_seconds_today=used.gpu_seconds_today,
    )
