"""Priorities under load (docs/operations/scaling.md, "Priorities"): how long a job waits to start while a queue
of its pool is saturated, by priority. `diffusion-jobs up` on a fresh var dir (embedded Redis, one mnist worker,
batching off), `sample` jobs of 100 DDPM steps.

    .venv/bin/python bench/priorities.py [--backlog 100] [--probes 5]

Phase 1 fills the low queue with `backlog` jobs, then submits probes one at a time, alternating high and normal,
each once the one before it started: both go ahead of every low job, so each waits for the job in hand only.
Phase 2 fills the normal queue instead: a high probe still waits for the job in hand only, a normal probe waits for
the whole backlog (what every job waited for before priorities). Time to start = the job's `started_at` minus its
`created_at` (both the server's clock).
"""

import os
import sys

# As in bench/all.py: bench/queue.py would shadow the standard library's `queue` when run as a script.
if sys.path and os.path.abspath(sys.path[0] or ".") == os.path.dirname(os.path.abspath(__file__)):
    sys.path[0] = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

import argparse
import statistics
import tempfile
import time
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx

from bench.queue import start_stack, stop_stack, wait_ready

JOB = {"kind": "sample", "model": "mnist-ddpm", "prompt": "3", "n": 1, "steps": 100}  # a fraction of a second


def seconds(start: str, end: str) -> float:
    return (datetime.fromisoformat(end) - datetime.fromisoformat(start)).total_seconds()


def submit(client: httpx.Client, priority: str, seed: int) -> str:
    response = client.post("/v1/jobs", json={**JOB, "priority": priority, "seed": seed})
    response.raise_for_status()
    job_id: str = response.json()["id"]
    return job_id


def wait_to_start(client: httpx.Client, job_id: str, timeout_s: float = 600) -> float:
    """Seconds from the job's creation to its start, once it started."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        job: dict[str, Any] = client.get(f"/v1/jobs/{job_id}").json()
        if job["started_at"]:
            return seconds(job["created_at"], job["started_at"])
        time.sleep(0.02)
    raise TimeoutError(f"job {job_id} did not start in {timeout_s} s")


def fill(client: httpx.Client, priority: str, backlog: int) -> list[str]:
    return [submit(client, priority, 1000 + i) for i in range(backlog)]


def drain(client: httpx.Client, job_ids: list[str]) -> None:
    for job_id in job_ids:
        client.get(f"/v1/jobs/{job_id}", params={"wait": 60})


def phase(client: httpx.Client, saturated: str, probes: list[str], backlog: int) -> dict[str, list[float]]:
    """Waits to start of each probe priority while `saturated` holds `backlog` jobs."""
    queued = fill(client, saturated, backlog)
    waits: dict[str, list[float]] = {p: [] for p in probes}
    for i, priority in enumerate(probes):
        waits[priority].append(wait_to_start(client, submit(client, priority, i)))
    drain(client, queued)
    return waits


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--backlog", type=int, default=100, help="jobs filling the saturated queue")
    parser.add_argument("--probes", type=int, default=5, help="probes of each priority in phase 1")
    args = parser.parse_args()
    os.environ["BATCH_MAX_JOBS"] = "1"  # each job alone: the backlog is a line of jobs, not a few batches
    with tempfile.TemporaryDirectory() as tmp:
        stack = start_stack(Path(tmp))
        try:
            wait_ready(stack)
            with httpx.Client(base_url=stack.base_url, timeout=90) as client:
                one = wait_to_start(client, submit(client, "normal", 0))  # the model loaded; one job alone
                low = phase(client, "low", ["high", "normal"] * args.probes, args.backlog)
                normal = phase(client, "normal", ["high", "normal"], max(20, args.backlog // 3))
        finally:
            stop_stack(stack)
    rows = [
        ("a lone job, empty queues", [one]),
        (f"high, {args.backlog} low jobs queued", low["high"]),
        (f"normal, {args.backlog} low jobs queued", low["normal"]),
        (f"high, {max(20, args.backlog // 3)} normal jobs queued", normal["high"]),
        (f"normal, {max(20, args.backlog // 3)} normal jobs queued", normal["normal"]),
    ]
    print("| job | time to start, median (s) | max (s) | probes |")
    print("|---|---|---|---|")
    for name, waits in rows:
        print(f"| {name} | {statistics.median(waits):.3f} | {max(waits):.3f} | {len(waits)} |")
    ratio = statistics.median(normal["normal"]) / max(statistics.median(low["high"]), 1e-3)
    print(f"\nhigh under a saturated low queue starts {ratio:.0f}x sooner than normal behind a saturated normal queue")
    return 0


if __name__ == "__main__":
    sys.exit(main())
