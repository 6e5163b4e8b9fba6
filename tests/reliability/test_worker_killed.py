"""Fault 1 of docs/operations/reliability.md with the shipped defaults (heartbeat 30 s): `diffusion-jobs up` runs the
embedded stack, the worker is SIGKILLed mid-sampling, `up` starts it again, the job is retried and succeeds within
60 s."""

import os
import signal
import time
from pathlib import Path

import httpx
import pytest

from bench.queue import start_stack, stop_stack, wait_ready
from tests.helpers import finish, wait_until

SAMPLE = {"kind": "sample", "model": "mnist-ddpm", "prompt": "5", "n": 8, "seed": 11}


def worker_pids(parent: int) -> list[int]:
    """The `diffusion-jobs worker --queue mnist` children of `parent` (Linux /proc)."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            ppid = int(stat.read_text().rpartition(")")[2].split()[1])
            argv = (stat.parent / "cmdline").read_bytes().split(b"\0")
        except (OSError, ValueError, IndexError):
            continue
        if ppid == parent and b"worker" in argv and b"mnist" in argv:
            found.append(int(stat.parent.name))
    return found


@pytest.mark.slow
def test_a_worker_killed_mid_sampling_is_restarted_and_the_job_succeeds_within_60_s(tmp_path, measured):
    stack = start_stack(tmp_path)
    try:
        wait_ready(stack)
        with httpx.Client(base_url=stack.base_url, timeout=30) as c:
            job = c.post("/v1/jobs", json=SAMPLE).json()
            wait_until(
                lambda: (c.get(f"/v1/jobs/{job['id']}").json()["progress"] or {}).get("step", 0) > 5, 60, "steps"
            )
            [pid] = worker_pids(stack.proc.pid)
            os.kill(pid, signal.SIGKILL)
            killed = time.monotonic()
            restarted = wait_until(lambda: [p for p in worker_pids(stack.proc.pid) if p != pid], 30, "a new worker")
            assert restarted
            final = finish(c, job["id"], 90)
            recovery_s = time.monotonic() - killed
    finally:
        stop_stack(stack)
    assert final["status"] == "succeeded", final
    assert final["attempts"] == 2
    assert recovery_s <= 60
    measured(recovery_s=round(recovery_s, 1), heartbeat_ttl_s=30, attempts=final["attempts"])
