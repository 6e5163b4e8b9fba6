"""`GET /metrics`: Prometheus text format, no key (like /healthz): keep it off the public network."""

from fastapi import APIRouter, Response
from prometheus_client import CONTENT_TYPE_LATEST
from starlette.concurrency import run_in_threadpool

from core.queues import TRAIN_QUEUE, all_queues
from service.deps import Conn, Models
from service.error_docs import error_responses
from service.metrics import render

router = APIRouter(tags=["operations"])


@router.get(
    "/metrics",
    response_class=Response,
    responses={200: {"content": {CONTENT_TYPE_LATEST: {}}}, **error_responses(503)},
)
async def metrics(conn: Conn, models: Models) -> Response:
    """Jobs ended by kind and status, durations, images, queue depths, workers and GPU memory, read from Redis."""
    queues = all_queues(sorted({spec.queue for spec in models.values()} | {TRAIN_QUEUE}))
    body = await run_in_threadpool(render, conn, queues)
    return Response(body, media_type=CONTENT_TYPE_LATEST)
