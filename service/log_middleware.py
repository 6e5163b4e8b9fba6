"""The job id of a request about a job, on every line logged while it is served (core/logs.py)."""

import re

from starlette.types import ASGIApp, Receive, Scope, Send

from core.logs import job_logging

JOB_PATH = re.compile(r"/v1/jobs/([^/]+)")


class JobIdMiddleware:
    """Sets the job id of a request to /v1/jobs/{id}... for every line logged while it is served (pure ASGI, so
    streamed responses keep it too)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        match = JOB_PATH.match(scope["path"]) if scope["type"] == "http" else None
        if match is None:
            await self.app(scope, receive, send)
            return
        with job_logging(match.group(1)):
            await self.app(scope, receive, send)
