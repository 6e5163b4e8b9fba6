"""The FastAPI application: state, background tasks, and the one error envelope of docs/api.md for every failure."""

import asyncio
import logging
import re
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager, suppress
from typing import Any

import redis
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException

from core import errors
from core.catalog import builtin_models
from core.images import guard_decoder
from core.queues import TRAIN_QUEUE, all_queues
from core.redis_conn import out_of_memory, sync_client
from core.settings import Settings, get_settings
from core.store import make_store
from core.tracing import setup_tracing
from service.auth import KeyRing
from service.docs import add_docs
from service.events import JobEvents
from service.jobs import JobRepo
from service.limits import BodyLimit
from service.log_middleware import JobIdMiddleware
from service.rate_limit import RateLimits
from service.reaper import run_reaper
from service.routes import admin, events, groups, health, jobs, metrics, models, playground, uploads, usage
from service.telemetry import TELEMETRY
from service.webhook_delivery import Deliverer

log = logging.getLogger(__name__)

STATUS = {
    errors.MalformedRequest: 400,
    errors.Unauthorized: 401,
    errors.Forbidden: 403,
    errors.NotFound: 404,
    errors.Conflict: 409,
    errors.PayloadTooLarge: 413,
    errors.UnsupportedMediaType: 415,
    errors.InvalidRequest: 422,
    errors.RateLimited: 429,
    errors.Unavailable: 503,
}
HTTP_TYPES = {
    400: "malformed_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    413: "payload_too_large",
    415: "unsupported_media_type",
}


def envelope(
    status: int, type_: str, message: str, details: list[Any] | None = None, headers: dict[str, str] | None = None
) -> JSONResponse:
    body = {"error": {"type": type_, "message": message, "details": details or []}}
    return JSONResponse(body, status_code=status, headers=headers)


async def on_service_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, errors.ServiceError)
    status = next(code for cls, code in STATUS.items() if isinstance(exc, cls))
    retry_after = exc.retry_after if isinstance(exc, errors.Unavailable | errors.RateLimited) else None
    headers = {"Retry-After": str(retry_after)} if retry_after is not None else None
    if isinstance(exc, errors.Unauthorized):
        headers = {"WWW-Authenticate": "Bearer"}
    return envelope(status, exc.type, exc.message, exc.details, headers)


async def on_validation_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    details = [{"loc": list(e["loc"]), "msg": e["msg"], "type": e["type"]} for e in exc.errors()]
    if any(d["type"] in ("json_invalid", "model_attributes_type") and d["loc"][:1] == ["body"] for d in details):
        return envelope(400, "malformed_request", "The body is not a JSON object; send one.", details)
    first = details[0]
    path = ".".join(str(p) for p in first["loc"][1:]) or str(first["loc"][0])
    more = f" (and {len(details) - 1} more)" if len(details) > 1 else ""
    return envelope(422, "validation_error", f"{path}: {first['msg']}{more}", details)


def allowed_methods(app: FastAPI, path: str) -> str | None:
    """Every method the schema documents on `path` (a 405's `Allow`), or None for a path it does not list."""
    for template, item in app.openapi()["paths"].items():
        if re.fullmatch(re.sub(r"\\\{\w+\\\}", "[^/]+", re.escape(template)), path):
            return ", ".join(sorted(method.upper() for method in item if method != "parameters"))
    return None


async def on_http_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, HTTPException)
    message = "No such route; see /docs." if exc.status_code == 404 else str(exc.detail)
    if exc.status_code == 400 and isinstance(exc.__cause__, RecursionError):
        message = "The JSON body is nested too deeply to read; send a flat JSON object."
    headers = getattr(exc, "headers", None)
    if exc.status_code == 405 and (allow := allowed_methods(request.app, request.scope["path"])):
        headers = {**(headers or {}), "Allow": allow}  # all of the path's routes, not just the first one matched
    return envelope(exc.status_code, HTTP_TYPES.get(exc.status_code, "http_error"), message, headers=headers)


async def on_redis_error(request: Request, exc: Exception) -> JSONResponse:
    log.warning("redis unavailable: %s", exc)
    return envelope(503, "unavailable", "The job store is unreachable; retry shortly.", headers={"Retry-After": "5"})


async def on_redis_reply(request: Request, exc: Exception) -> JSONResponse:
    """An error reply of Redis: at `maxmemory` a 503 that says so; any other is a bug."""
    assert isinstance(exc, redis.ResponseError)
    if not out_of_memory(exc):
        return await on_unexpected(request, exc)
    log.warning("redis out of memory: %s", exc)
    message = "The job store is full; retry later (nothing already accepted was dropped)."
    return envelope(503, "unavailable", message, headers={"Retry-After": "30"})


async def on_unexpected(request: Request, exc: Exception) -> JSONResponse:
    log.exception("unhandled error on %s %s", request.method, request.url.path)
    return envelope(500, "internal_error", "An unexpected error occurred; it has been logged.")


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or get_settings()
    guard_decoder(settings.image_limits)
    conn = sync_client(settings)
    known_models = builtin_models(settings)
    app = FastAPI(
        title="diffusion-jobs",
        version="1",
        lifespan=background_tasks(
            conn, settings, all_queues(sorted({m.queue for m in known_models.values()} | {TRAIN_QUEUE}))
        ),
        description="A REST inference service with a job queue for diffusion models.",
        docs_url=None,  # served offline by service/docs.py
        redoc_url=None,
        telemetry=TELEMETRY,  # request spans, where tracing is on (service/telemetry.py)
    )
    setup_tracing("diffusion-jobs-api")  # only where OTEL_* ask for traces: off, nothing is installed (core/tracing.py)
    app.state.settings = settings
    app.state.conn = conn
    app.state.store = make_store(settings, conn)
    app.state.repo = JobRepo(conn, settings)
    app.state.events = JobEvents(settings)
    app.state.models = known_models
    app.state.keyring = KeyRing(settings.key_list)
    app.state.rate_limits = RateLimits(conn, settings.rate_limit_writes, settings.rate_limit_reads)
    for router in (
        jobs.router,
        groups.router,
        events.router,
        uploads.router,
        models.router,
        usage.router,
        health.router,
        metrics.router,
    ):
        app.include_router(router)
    app.include_router(admin.router)  # admin keys only (docs/operations/administration.md)
    playground.install(app)
    add_docs(app)
    add_error_handlers(app)
    app.add_middleware(BodyLimit, max_bytes=settings.max_body_bytes)
    app.add_middleware(JobIdMiddleware)  # outermost: every line about a job carries its id
    return app


def background_tasks(
    conn: redis.Redis, settings: Settings, queues: list[str]
) -> Callable[[FastAPI], AbstractAsyncContextManager[None]]:
    """The app's lifespan: the change events' reader, the reaper (of `queues`) and the webhooks' deliverer run while
    it serves; then they are canceled and the Redis connection closed."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        tasks = [
            asyncio.create_task(app.state.events.run()),
            asyncio.create_task(run_reaper(conn, settings, queues)),
            asyncio.create_task(Deliverer(conn, settings).run()),  # webhooks (service/webhook_delivery.py)
        ]
        yield
        for task in tasks:
            task.cancel()
            with suppress(asyncio.CancelledError):
                await task
        conn.close()

    return lifespan


def add_error_handlers(app: FastAPI) -> None:
    """Every error as the API's envelope (docs/api.md, "Errors")."""
    app.add_exception_handler(errors.ServiceError, on_service_error)
    app.add_exception_handler(RequestValidationError, on_validation_error)
    app.add_exception_handler(HTTPException, on_http_error)
    app.add_exception_handler(redis.ConnectionError, on_redis_error)
    app.add_exception_handler(redis.TimeoutError, on_redis_error)
    app.add_exception_handler(redis.ResponseError, on_redis_reply)
    app.add_exception_handler(Exception, on_unexpected)
