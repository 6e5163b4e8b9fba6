"""Queue benchmark: the embedded stack's latency against the same work in-process, and its submit rate.

    .venv/bin/python bench/queue.py [--jobs 200] [--clients 50] [--burst 2000] [--json PATH] [--keep-var]

Starts `diffusion-jobs up` (embedded Redis, the API, one worker) in a temporary VAR_DIR on a free port, and stops it
at the end whatever happens. Phases:

1. latency: N `noise` jobs one after another with `Prefer: wait=10` (client wall time from POST to the 200), then
   the same work (DDPM forward process on one MNIST digit, PNG encoded) N times in this process; the overhead is
   the service's percentile minus the in-process one.
2. submit rate: C concurrent clients POST B jobs without waiting; accepted (202) per second of wall time, and the
   POST latency.
3. drain: every accepted job must reach a terminal status within 300 s; the rest are counted as lost.

Prints a table (targets marked ok or MISSED; the exit status is 0 either way) and, with --json, writes the figures.
"""

import os
import sys

# Run as a script, this file's folder comes first on sys.path, where this file would shadow the standard library's
# `queue` (imported when asyncio starts its thread pool). Drop that folder before anything else is imported.
if sys.path and os.path.abspath(sys.path[0] or ".") == os.path.dirname(os.path.abspath(__file__)):
    del sys.path[0]

import argparse
import asyncio
import contextlib
import json
import math
import platform
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx

JOB_BODY: dict[str, Any] = {
    "kind": "noise",
    "model": "mnist-ddpm",
    "image": {"dataset": "mnist-5k", "index": 3},
    "timesteps": [100],
    "seed": 1,
}
DIGIT_INDEX = 3
TIMESTEP = 100
SCHEDULE_LENGTH = 300
WARMUP_JOBS = 10
READY_TIMEOUT_S = 60.0
STOP_TIMEOUT_S = 30.0
DRAIN_TIMEOUT_S = 300.0
LONG_POLL_S = 5.0
WAIT_S = 10
TERMINAL = frozenset({"succeeded", "failed", "canceled"})
TARGET_OVERHEAD_P50_MS = 15.0
TARGET_OVERHEAD_P99_MS = 60.0
TARGET_SUBMIT_RATE = 500.0
SERVER_LOG_LEVEL = re.compile(r'( |"level": ")(WARNING|ERROR|CRITICAL)( |")')  # a text line's level, or a JSON line's
EXCEPTION_LINE = re.compile(r"^[A-Za-z_][\w.]*(Error|Exception|Interrupt|Exit)\b")  # a traceback's last line


# ---------------------------------------------------------------------------------------------------------------------
# Small helpers


def percentile(values: list[float], p: float) -> float:
    """Nearest-rank percentile (p in 0..100); NaN for no values."""
    if not values:
        return math.nan
    ordered = sorted(values)
    rank = max(1, math.ceil(p / 100 * len(ordered)))
    return ordered[rank - 1]


def parse_time(stamp: str | None) -> float | None:
    """RFC 3339 (`...Z`) to a POSIX timestamp."""
    return datetime.fromisoformat(stamp).timestamp() if stamp else None


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class CounterLine:
    """One counter line on stderr, rewritten in place at most every `interval_s` (or every 10 % off a terminal)."""

    def __init__(self, label: str, total: int, interval_s: float = 0.25) -> None:
        self.label = label
        self.total = total
        self.tty = sys.stderr.isatty()
        self.interval_s = interval_s if self.tty else 5.0
        self.last = 0.0
        self.started = time.monotonic()

    def update(self, done: int, extra: str = "") -> None:
        now = time.monotonic()
        if now - self.last < self.interval_s and done < self.total:
            return
        self.last = now
        line = f"{self.label}: {done}/{self.total} ({now - self.started:.1f} s){' ' + extra if extra else ''}"
        sys.stderr.write(f"\r\x1b[K{line}" if self.tty else f"{line}\n")
        sys.stderr.flush()

    def close(self) -> None:
        if self.tty:
            sys.stderr.write("\n")
            sys.stderr.flush()


def note(message: str) -> None:
    sys.stderr.write(f"[bench] {message}\n")
    sys.stderr.flush()


def component_name(argv: list[str]) -> str:
    """`redis`, `api`, `worker`: what a child of `diffusion-jobs up` is, from its command line."""
    if "diffusion_jobs.cli" in argv:
        return argv[argv.index("diffusion_jobs.cli") + 1]
    return "redis" if any("redis" in arg for arg in argv[:1]) else Path(argv[0]).name


def children_cpu_s(parent_pid: int) -> dict[str, float]:
    """CPU seconds (user + system) so far of each child of `parent_pid`, by component (Linux /proc; else empty)."""
    ticks = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
    found: dict[str, float] = {}
    for stat_path in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError, ValueError, IndexError):
            fields = stat_path.read_text().rpartition(")")[2].split()  # after "pid (comm)": state, ppid, ...
            if int(fields[1]) != parent_pid:
                continue
            argv = [a.decode(errors="replace") for a in (stat_path.parent / "cmdline").read_bytes().split(b"\0") if a]
            name = component_name(argv)
            found[name] = found.get(name, 0.0) + (int(fields[11]) + int(fields[12])) / ticks  # utime + stime
    return found


@dataclass
class CpuMeter:
    """CPU used by the stack's components and by this process between `start()` and `stop()`, in cores."""

    parent_pid: int
    cores: dict[str, float] = field(default_factory=dict)
    _wall: float = 0.0
    _own: float = 0.0
    _children: dict[str, float] = field(default_factory=dict)

    def start(self) -> None:
        self._wall, self._own, self._children = time.monotonic(), time.process_time(), children_cpu_s(self.parent_pid)

    def stop(self) -> None:
        wall = max(time.monotonic() - self._wall, 1e-9)
        now = children_cpu_s(self.parent_pid)
        self.cores = {name: (now[name] - self._children.get(name, 0.0)) / wall for name in sorted(now)}
        self.cores["bench client"] = (time.process_time() - self._own) / wall


# ---------------------------------------------------------------------------------------------------------------------
# The stack


@dataclass
class Stack:
    proc: subprocess.Popen[bytes]
    base_url: str
    var_dir: Path
    log_path: Path


def start_stack(var_dir: Path) -> Stack:
    port = free_port()
    env = {k: v for k, v in os.environ.items() if k not in ("REDIS_URL", "API_KEYS")}
    env.update(VAR_DIR=str(var_dir), PORT=str(port), HOST="127.0.0.1")
    log_path = var_dir / "up.log"
    exe = Path(sys.executable).with_name("diffusion-jobs")
    argv = [str(exe), "up"] if exe.exists() else [sys.executable, "-m", "diffusion_jobs.cli", "up"]
    with log_path.open("wb") as log:
        proc = subprocess.Popen(argv, env=env, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    return Stack(proc, f"http://127.0.0.1:{port}", var_dir, log_path)


def wait_ready(stack: Stack, timeout_s: float = READY_TIMEOUT_S) -> float:
    """Seconds until GET /readyz answered 200; raises if the stack exits or the time runs out."""
    started = time.monotonic()
    with httpx.Client(base_url=stack.base_url, timeout=2.0) as client:
        while time.monotonic() - started < timeout_s:
            if stack.proc.poll() is not None:
                raise RuntimeError(f"`diffusion-jobs up` exited with {stack.proc.returncode}:\n{log_tail(stack)}")
            with contextlib.suppress(httpx.HTTPError):
                if client.get("/readyz").status_code == 200:
                    return time.monotonic() - started
            time.sleep(0.2)
    raise RuntimeError(f"/readyz not 200 after {timeout_s:.0f} s:\n{log_tail(stack)}")


def stop_stack(stack: Stack) -> float:
    """SIGTERM, then wait (SIGKILL past STOP_TIMEOUT_S); the seconds it took."""
    started = time.monotonic()
    if stack.proc.poll() is None:
        stack.proc.send_signal(signal.SIGTERM)
        try:
            stack.proc.wait(STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            note(f"`up` did not stop in {STOP_TIMEOUT_S:.0f} s; killing it")
            stack.proc.kill()
            stack.proc.wait()
    return time.monotonic() - started


def log_tail(stack: Stack, lines: int = 30) -> str:
    text = stack.log_path.read_text(errors="replace") if stack.log_path.exists() else ""
    return "\n".join(text.splitlines()[-lines:])


def server_problems(stack: Stack) -> list[str]:
    """The stack log's warnings and errors, and the exception line that ends each traceback."""
    if not stack.log_path.exists():
        return []
    lines = stack.log_path.read_text(errors="replace").splitlines()
    return [line for line in lines if SERVER_LOG_LEVEL.search(line) or EXCEPTION_LINE.match(line)]


@contextlib.contextmanager
def running_stack(keep_var: bool) -> Iterator[Stack]:
    var_dir = Path(tempfile.mkdtemp(prefix="bench-queue-"))
    stack = start_stack(var_dir)
    try:
        note(f"stack starting in {var_dir} at {stack.base_url}")
        note(f"ready after {wait_ready(stack):.1f} s")
        yield stack
    finally:
        note(f"stack stopped in {stop_stack(stack):.2f} s (exit status {stack.proc.returncode})")
        problems = server_problems(stack)
        if problems:
            note(f"{len(problems)} warning/error lines in the server log, first ones:")
            for line in problems[:10]:
                sys.stderr.write(f"    {line}\n")
        if keep_var:
            note(f"kept {var_dir} (server log: {stack.log_path})")
        else:
            shutil.rmtree(var_dir, ignore_errors=True)


# ---------------------------------------------------------------------------------------------------------------------
# Phase 1: latency


@dataclass
class LatencyResult:
    service_ms: list[float] = field(default_factory=list)
    queue_wait_ms: list[float] = field(default_factory=list)  # started_at - created_at, from the job
    run_ms: list[float] = field(default_factory=list)  # finished_at - started_at, from the job
    edge_ms: list[float] = field(default_factory=list)  # client time - (finished_at - created_at): HTTP, admission...
    errors: Counter[str] = field(default_factory=Counter)


def submit_and_wait(client: httpx.Client, seed: int) -> tuple[float, httpx.Response]:
    started = time.perf_counter()
    response = client.post("/v1/jobs", json={**JOB_BODY, "seed": seed}, headers={"Prefer": f"wait={WAIT_S}"})
    return (time.perf_counter() - started) * 1000, response


def warm_up(stack: Stack, jobs: int = WARMUP_JOBS) -> None:
    with httpx.Client(base_url=stack.base_url, timeout=WAIT_S + 10) as client:
        for seed in range(jobs):
            _, response = submit_and_wait(client, seed)
            if response.status_code != 200:
                note(f"warm-up job answered {response.status_code}: {response.text[:200]}")


def service_latency(stack: Stack, jobs: int) -> LatencyResult:
    result = LatencyResult()
    progress = CounterLine("latency (service)", jobs)
    with httpx.Client(base_url=stack.base_url, timeout=WAIT_S + 10) as client:
        for seed in range(jobs):
            elapsed_ms, response = submit_and_wait(client, seed)
            body = response.json() if response.headers.get("content-type", "").startswith("application/json") else {}
            if response.status_code != 200 or body.get("status") != "succeeded":
                result.errors[f"{response.status_code} {body.get('status', '?')}"] += 1
                continue
            result.service_ms.append(elapsed_ms)
            created, started, finished = (parse_time(body[k]) for k in ("created_at", "started_at", "finished_at"))
            if created is not None and started is not None and finished is not None:
                result.queue_wait_ms.append((started - created) * 1000)
                result.run_ms.append((finished - started) * 1000)
                result.edge_ms.append(elapsed_ms - (finished - created) * 1000)
            progress.update(seed + 1)
    progress.close()
    return result


def inprocess_latency(jobs: int) -> list[float]:
    """The worker's work for one `noise` job without HTTP or Redis: digit, schedule, noise, forward, PNG."""
    import torch

    from models.datasets import mnist_5k
    from models.forward import ddpm_forward
    from models.imageio import encode_png
    from models.schedules import linear_schedule

    def once(seed: int) -> bytes:
        x0 = torch.from_numpy(mnist_5k().images[DIGIT_INDEX]).float()[None, None] / 255
        schedule = linear_schedule(SCHEDULE_LENGTH)
        noise = torch.randn(x0.shape, generator=torch.Generator().manual_seed(seed))
        png: bytes = encode_png(ddpm_forward(x0, torch.tensor([TIMESTEP]), schedule.alphas_cumprod, noise)[0])
        return png

    for seed in range(WARMUP_JOBS):  # the dataset loads on the first call
        once(seed)
    timings: list[float] = []
    progress = CounterLine("latency (in-process)", jobs)
    for seed in range(jobs):
        started = time.perf_counter()
        once(seed)
        timings.append((time.perf_counter() - started) * 1000)
        progress.update(seed + 1)
    progress.close()
    return timings


# ---------------------------------------------------------------------------------------------------------------------
# Phases 2 and 3: submit rate, then drain


@dataclass
class SubmitResult:
    accepted_ids: list[str] = field(default_factory=list)  # in the order the 202s arrived
    post_ms: list[float] = field(default_factory=list)  # of the 202s
    wall_s: float = 0.0
    refused: Counter[str] = field(default_factory=Counter)  # status code or exception name, for everything else


@dataclass
class DrainResult:
    statuses: Counter[str] = field(default_factory=Counter)  # terminal status of each accepted job
    not_found: int = 0
    not_terminal: int = 0
    wall_s: float = 0.0
    worker_jobs_per_s: float = math.nan  # succeeded / (last finished_at - first started_at)


class RawConnection:
    """One keep-alive HTTP/1.1 connection that speaks just enough to POST JSON and read the answer.

    The load generator must cost the shared cores far less than the service it measures: 50 httpx clients took
    ~0.55 of this machine's 2 cores at ~330/s, which the API then could not have.
    """

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, host: str) -> None:
        self.reader, self.writer, self.host = reader, writer, host

    @classmethod
    async def open(cls, base_url: str) -> "RawConnection":
        host, port = base_url.removeprefix("http://").split(":")
        reader, writer = await asyncio.open_connection(host, int(port))
        return cls(reader, writer, host)

    async def post_json(self, path: str, body: bytes) -> tuple[int, bytes]:
        head = f"POST {path} HTTP/1.1\r\nHost: {self.host}\r\nContent-Type: application/json\r\n"
        self.writer.write(f"{head}Content-Length: {len(body)}\r\n\r\n".encode() + body)
        status = int((await self.reader.readline()).split()[1])
        length = 0
        while (line := await self.reader.readline()) not in (b"\r\n", b""):
            name, _, value = line.partition(b":")
            if name.strip().lower() == b"content-length":
                length = int(value)
        return status, await self.reader.readexactly(length)

    def close(self) -> None:
        self.writer.close()


async def submit_client(conn: RawConnection, seeds: Iterator[int], result: SubmitResult, progress: CounterLine) -> None:
    for seed in seeds:  # shared by every client: each takes the next job until none is left
        started = time.perf_counter()
        try:
            status, body = await conn.post_json("/v1/jobs", json.dumps({**JOB_BODY, "seed": seed}).encode())
        except (OSError, asyncio.IncompleteReadError, ValueError) as exc:
            result.refused[type(exc).__name__] += 1
            return
        if status == 202:
            result.post_ms.append((time.perf_counter() - started) * 1000)
            result.accepted_ids.append(json.loads(body)["id"])
        else:
            result.refused[str(status)] += 1
        progress.update(len(result.accepted_ids) + result.refused.total())


async def submit_burst(base_url: str, clients: int, burst: int) -> SubmitResult:
    """`clients` connections, opened before the clock starts, each POSTing the next job until none is left."""
    result = SubmitResult()
    seeds = iter(range(burst))
    pool = [await RawConnection.open(base_url) for _ in range(clients)]
    progress = CounterLine("submit", burst)
    started = time.perf_counter()
    try:
        await asyncio.gather(*(submit_client(conn, seeds, result, progress) for conn in pool))
    finally:
        result.wall_s = time.perf_counter() - started
        for conn in pool:
            conn.close()
    progress.close()
    return result


async def list_jobs(client: httpx.AsyncClient, wanted: set[str]) -> dict[str, dict[str, Any]]:
    """The wanted jobs found by paging GET /v1/jobs (newest first), stopping once all are seen."""
    found: dict[str, dict[str, Any]] = {}
    cursor: str | None = None
    while True:
        params: dict[str, str | int] = {"limit": 100, **({"cursor": cursor} if cursor else {})}
        response = await client.get("/v1/jobs", params=params)
        response.raise_for_status()
        page = response.json()
        found.update({job["id"]: job for job in page["jobs"] if job["id"] in wanted})
        cursor = page["next_cursor"]
        if cursor is None or len(found) == len(wanted):
            return found


async def drain(base_url: str, accepted_ids: list[str], timeout_s: float = DRAIN_TIMEOUT_S) -> DrainResult:
    """Waits until every accepted job is terminal: a pass over the list, then a long poll on the newest pending job
    (the worker takes jobs in order, so when it ends most others have), until none is pending or time runs out."""
    result = DrainResult()
    pending = set(accepted_ids)
    finished: dict[str, dict[str, Any]] = {}
    seen: set[str] = set()
    progress = CounterLine("drain", len(accepted_ids), interval_s=0.0)
    started = time.monotonic()
    deadline = started + timeout_s
    async with httpx.AsyncClient(base_url=base_url, timeout=LONG_POLL_S + 30) as client:
        while pending:
            try:
                jobs = await list_jobs(client, pending)
            except httpx.HTTPError as exc:
                note(f"listing jobs failed ({exc!r}); retrying")
                jobs = {}
                await asyncio.sleep(1.0)
            seen.update(jobs)
            finished.update({job_id: job for job_id, job in jobs.items() if job["status"] in TERMINAL})
            pending -= finished.keys()
            progress.update(len(finished), f"terminal, {len(pending)} pending")
            remaining = deadline - time.monotonic()
            if not pending or remaining <= 0:
                break
            newest = next(job_id for job_id in reversed(accepted_ids) if job_id in pending)
            wait = min(LONG_POLL_S, remaining)
            with contextlib.suppress(httpx.HTTPError):
                await client.get(f"/v1/jobs/{newest}", params={"wait": f"{wait:.1f}"})
        for job_id in pending - seen:  # never listed: ask for each one before calling it lost
            try:
                missing = (await client.get(f"/v1/jobs/{job_id}")).status_code == 404
            except httpx.HTTPError:
                missing = False
            result.not_found += missing
            result.not_terminal += not missing
        result.not_terminal += len(pending & seen)
    progress.close()
    result.wall_s = time.monotonic() - started
    result.statuses = Counter(job["status"] for job in finished.values())
    result.worker_jobs_per_s = worker_rate(list(finished.values()))
    return result


def worker_rate(jobs: list[dict[str, Any]]) -> float:
    """Succeeded jobs per second between the first start and the last finish."""
    done = [job for job in jobs if job["status"] == "succeeded"]
    starts = [t for t in (parse_time(job["started_at"]) for job in done) if t is not None]
    ends = [t for t in (parse_time(job["finished_at"]) for job in done) if t is not None]
    if not starts or not ends or max(ends) <= min(starts):
        return math.nan
    return len(done) / (max(ends) - min(starts))


# ---------------------------------------------------------------------------------------------------------------------
# Report


@dataclass
class Row:
    name: str
    value: float
    unit: str
    target: str = ""
    met: bool | None = None  # None: no target


def load_average() -> str:
    return " ".join(f"{load:.2f}" for load in os.getloadavg()) if hasattr(os, "getloadavg") else "?"


def machine_info() -> dict[str, str]:
    """Taken at the start; `load_average_end` is added at the end (other work on the machine skews the figures)."""
    import torch

    return {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "nproc": str(os.cpu_count() or "?"),
        "cpus_usable": str(len(os.sched_getaffinity(0))) if hasattr(os, "sched_getaffinity") else "?",
        "python": platform.python_version(),
        "torch": torch.__version__,
        "platform": platform.platform(),
        "load_average_start": load_average(),
    }


def latency_rows(service: LatencyResult, inproc_ms: list[float]) -> list[Row]:
    over50 = percentile(service.service_ms, 50) - percentile(inproc_ms, 50)
    over99 = percentile(service.service_ms, 99) - percentile(inproc_ms, 99)
    return [
        Row("latency: service p50 (POST wait=10 -> 200)", percentile(service.service_ms, 50), "ms"),
        Row("latency: service p99", percentile(service.service_ms, 99), "ms"),
        Row("latency: in-process p50", percentile(inproc_ms, 50), "ms"),
        Row("latency: in-process p99", percentile(inproc_ms, 99), "ms"),
        Row(
            "overhead p50 (service - in-process)",
            over50,
            "ms",
            f"<= {TARGET_OVERHEAD_P50_MS:g}",
            over50 <= TARGET_OVERHEAD_P50_MS,
        ),
        Row(
            "overhead p99 (service - in-process)",
            over99,
            "ms",
            f"<= {TARGET_OVERHEAD_P99_MS:g}",
            over99 <= TARGET_OVERHEAD_P99_MS,
        ),
        Row("  job queue wait p50 (started - created)", percentile(service.queue_wait_ms, 50), "ms"),
        Row("  job run p50 (finished - started)", percentile(service.run_ms, 50), "ms"),
        Row("  rest p50 (HTTP, admission, enqueue, notify)", percentile(service.edge_ms, 50), "ms"),
        Row("latency: jobs not succeeded", float(service.errors.total()), "jobs"),
    ]


def cpu_rows(phase: str, meter: CpuMeter) -> list[Row]:
    return [Row(f"{phase}: CPU of {name}", cores, "cores") for name, cores in meter.cores.items()]


def submit_rows(submit: SubmitResult, drained: DrainResult) -> list[Row]:
    accepted = len(submit.accepted_ids)
    rate = accepted / submit.wall_s if submit.wall_s else 0.0
    lost = drained.not_found + drained.not_terminal
    return [
        Row(
            "submit: accepted per second (202s / wall)",
            rate,
            "/s",
            f">= {TARGET_SUBMIT_RATE:g}",
            rate >= TARGET_SUBMIT_RATE,
        ),
        Row("submit: POST p50", percentile(submit.post_ms, 50), "ms"),
        Row("submit: POST p99", percentile(submit.post_ms, 99), "ms"),
        Row("submit: wall time", submit.wall_s, "s"),
        Row("submit: accepted", float(accepted), "jobs"),
        Row("submit: refused (not 202)", float(submit.refused.total()), "jobs"),
        Row("drain: succeeded", float(drained.statuses["succeeded"]), "jobs"),
        Row("drain: failed", float(drained.statuses["failed"]), "jobs"),
        Row("drain: canceled", float(drained.statuses["canceled"]), "jobs"),
        Row("drain: lost (not found or not terminal)", float(lost), "jobs", "= 0", lost == 0),
        Row("drain: wall time after the last submit", drained.wall_s, "s"),
        Row("drain: worker throughput", drained.worker_jobs_per_s, "jobs/s"),
    ]


def format_value(value: float, unit: str) -> str:
    if math.isnan(value):
        return "n/a"
    if unit == "jobs":
        return f"{value:.0f}"
    if unit == "cores":
        return f"{value:.2f} {unit}"
    return f"{value:.1f} {unit}"


def render(rows: list[Row], machine: dict[str, str], args: argparse.Namespace) -> str:
    width = max(len(row.name) for row in rows)
    lines = [
        f"diffusion-jobs queue benchmark, {machine['date']}",
        f"machine: nproc {machine['nproc']} (usable {machine['cpus_usable']}), Python {machine['python']}, "
        f"torch {machine['torch']}, {machine['platform']}",
        f"load average (1/5/15 min): {machine['load_average_start']} at the start, {machine['load_average_end']} at "
        "the end",
        f"run: --jobs {args.jobs} --clients {args.clients} --burst {args.burst}",
        "",
        f"{'figure':<{width}}  {'value':>12}  {'target':<8}  status",
        f"{'-' * width}  {'-' * 12}  {'-' * 8}  ------",
    ]
    for row in rows:
        status = "" if row.met is None else ("ok" if row.met else "MISSED")
        lines.append(f"{row.name:<{width}}  {format_value(row.value, row.unit):>12}  {row.target:<8}  {status}")
    return "\n".join(lines)


def write_json(path: Path, rows: list[Row], machine: dict[str, str], extra: dict[str, Any]) -> None:
    figures = [{**asdict(row), "value": None if math.isnan(row.value) else row.value} for row in rows]
    path.write_text(json.dumps({"machine": machine, "figures": figures, **extra}, indent=2) + "\n")


# ---------------------------------------------------------------------------------------------------------------------
# Main


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--jobs", type=int, default=200, help="latency: jobs, one at a time (default 200)")
    p.add_argument("--clients", type=int, default=50, help="submit rate: concurrent clients (default 50)")
    p.add_argument("--burst", type=int, default=2000, help="submit rate: jobs submitted in all (default 2000)")
    p.add_argument("--json", type=Path, help="also write the figures as JSON to this path")
    p.add_argument("--keep-var", action="store_true", help="keep the temporary VAR_DIR (and the server log)")
    return p.parse_args(argv)


def exit_on_sigterm() -> None:
    """SIGTERM raises SystemExit like Ctrl-C raises KeyboardInterrupt, so the stack is stopped on the way out."""
    signal.signal(signal.SIGTERM, lambda signum, _frame: sys.exit(128 + signum))


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    exit_on_sigterm()
    machine = machine_info()
    with running_stack(args.keep_var) as stack:
        warm_up(stack)
        note(f"warmed up with {WARMUP_JOBS} jobs")
        service = service_latency(stack, args.jobs)
        inproc_ms = inprocess_latency(args.jobs)
        meter = CpuMeter(stack.proc.pid)
        meter.start()
        submit = asyncio.run(submit_burst(stack.base_url, args.clients, args.burst))
        meter.stop()
        drained = asyncio.run(drain(stack.base_url, submit.accepted_ids))
    problems = server_problems(stack)  # the whole log, now that the stack has stopped
    rows = latency_rows(service, inproc_ms) + submit_rows(submit, drained) + cpu_rows("submit", meter)
    machine["load_average_end"] = load_average()
    print(render(rows, machine, args))
    if service.errors or submit.refused:
        print(f"\nlatency errors: {dict(service.errors)}; submit refusals: {dict(submit.refused)}")
    if args.json:
        extra = {
            "args": {"jobs": args.jobs, "clients": args.clients, "burst": args.burst},
            "latency_errors": dict(service.errors),
            "submit_refused": dict(submit.refused),
            "server_log_problems": len(problems),
        }
        write_json(args.json, rows, machine, extra)
    return 0


if __name__ == "__main__":
    sys.exit(main())
