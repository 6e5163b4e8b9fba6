"""`diffusion-jobs dashboard`: rq-dashboard, RQ's own web view of queues, workers and jobs, on the service's Redis
(docs/operations/administration.md, "The dashboard"). An optional extra: `pip install 'diffusion-jobs[dashboard]'`.

The process becomes rq-dashboard (exec), reading jobs with RQ's JSON serializer as the service writes them, bound to
loopback unless told otherwise: the dashboard has no login of its own beyond an optional HTTP Basic user.
"""

import importlib.util
import os
import sys

from core.settings import Settings


def dashboard_argv(redis_url: str, host: str, port: int) -> list[str]:
    return [
        sys.executable,
        "-m",
        "rq_dashboard",
        "--bind",
        host,
        "--port",
        str(port),
        "--redis-url",
        redis_url,
        "--json",  # the service's jobs are JSON (RQ's JSONSerializer), not pickle
    ]


def run_dashboard(settings: Settings, host: str, port: int) -> int:
    """Replaces this process with rq-dashboard on REDIS_URL; 2 when it cannot start."""
    if importlib.util.find_spec("rq_dashboard") is None:
        sys.stderr.write("rq-dashboard is not installed: pip install 'diffusion-jobs[dashboard]'\n")
        return 2
    if not settings.redis_url:
        sys.stderr.write("set REDIS_URL to the service's Redis (`diffusion-jobs up` logs the embedded one's URL)\n")
        return 2
    argv = dashboard_argv(settings.redis_url, host, port)
    os.execv(argv[0], argv)
