"""A job's live events: GET /v1/jobs/{id}/events, Server-Sent Events (docs/api.md; what is sent: service/job_stream.py).

sse-starlette frames the events, notices a client that went away, and ends open streams when the server shuts down
(a plain StreamingResponse would hold uvicorn's graceful shutdown until each job ends). Its own timed ping is off:
the stream sends `: keep-alive` itself, and only while nothing else was sent.
"""

from typing import Annotated

from fastapi import APIRouter, Header
from sse_starlette import EventSourceResponse
from starlette.concurrency import run_in_threadpool

from service.deps import Conn, Events, Owner, Repo, SettingsDep
from service.error_docs import AUTHED, error_responses
from service.job_stream import SEP, JobStream, job_events
from service.routes import BEARER
from service.routes.jobs import JobId

router = APIRouter(prefix="/v1/jobs", tags=["jobs"], dependencies=BEARER, responses=error_responses(*AUTHED, 422))
HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}  # nothing between may keep or hold the stream
STREAM = {
    "description": "`job` events (the Job JSON) at each change, `preview` events (a PNG data URL) while a sampling "
    "job runs, `: keep-alive` comments; ends after the job's terminal `job` event.",
    # OpenAPI 3.1 (no `itemSchema` yet): the media type's `schema` describes each event of the stream
    "content": {
        "text/event-stream": {
            "schema": {
                "type": "object",
                "properties": {
                    "event": {"type": "string", "enum": ["job", "preview"]},
                    "data": {"type": "string", "description": "job: the Job as JSON; preview: a PNG data URL"},
                    "id": {"type": "string"},
                },
                "required": ["event", "data"],
            }
        }
    },
}


@router.get("/{job_id}/events", response_class=EventSourceResponse, responses={200: STREAM, **error_responses(404)})
async def stream_job_events(
    job_id: JobId,
    owner: Owner,
    repo: Repo,
    conn: Conn,
    events: Events,
    settings: SettingsDep,
    last_event_id: Annotated[
        int, Header(alias="Last-Event-ID", ge=0, description="the id of the last event seen: resume after it")
    ] = 0,
) -> EventSourceResponse:
    await run_in_threadpool(repo.fetch, owner, job_id)  # a job that is not the caller's: 404 before any byte
    stream = JobStream(repo, conn, settings.artifact_ttl_s)
    body = job_events(stream, events, owner, job_id, last_event_id, settings.sse_keepalive_s)
    return EventSourceResponse(body, ping=0, sep=SEP, headers=HEADERS)
