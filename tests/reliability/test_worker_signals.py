"""Worker faults 3 and 4 of docs/operations/reliability.md: a long job keeps its heartbeat; SIGTERM once finishes the
job in hand, twice stops it at its next step and hands it to another worker. Real API, real worker processes, real
Redis."""

import signal
import time
from datetime import datetime
from pathlib import Path

import httpx

from tests.helpers import (
    NOISE,
    SLOW_SAMPLE,
    TEST_KEYS,
    Stack,
    client_for,
    finish,
    job_of,
    running_stack,
    submit,
    wait_until,
)


def running_at_step(client: httpx.Client, job_id: str, step: int) -> dict:
    def past() -> dict | None:
        j = job_of(client, job_id)
        return j if j["status"] == "running" and (j["progress"] or {}).get("step", 0) >= step else None

    found: dict = wait_until(past, 60, f"the job to pass step {step}")
    return found


def seconds(start: str, end: str) -> float:
    return (datetime.fromisoformat(end) - datetime.fromisoformat(start)).total_seconds()


def log_of(stack: Stack, name: str) -> str:
    return Path(stack.log_dir / f"{name}.log").read_text()


def test_a_job_longer_than_its_heartbeat_is_never_taken_for_abandoned(redis_url, tmp_path, measured):
    with (
        running_stack(redis_url, tmp_path, HEARTBEAT_TTL_S="2", REAPER_INTERVAL_S="0.5") as stack,
        client_for(stack, TEST_KEYS[-30]) as c,
    ):
        long = c.post("/v1/jobs", json={**SLOW_SAMPLE, "n": 48}).json()  # ~20 s here: many heartbeats anywhere
        done = finish(c, long["id"], 180)
        assert done["status"] == "succeeded", done
        ran_s = seconds(done["started_at"], done["finished_at"])
        assert ran_s > 3 * 2  # it outlived its heartbeat three times
        assert done["attempts"] == 1
        assert "abandoned" not in log_of(stack, "api")
        measured(job_s=round(ran_s, 1), heartbeat_ttl_s=2, attempts=1)


def test_sigterm_finishes_the_job_in_hand_then_exits(redis_url, tmp_path):
    with running_stack(redis_url, tmp_path) as stack, client_for(stack, TEST_KEYS[-31]) as c:
        slow = c.post("/v1/jobs", json=SLOW_SAMPLE).json()
        waiting = c.post("/v1/jobs", json=NOISE).json()
        running_at_step(c, slow["id"], 1)
        stack.workers[0].send_signal(signal.SIGTERM)
        assert stack.workers[0].wait(60) == 0
        finished = job_of(c, slow["id"])
        assert finished["status"] == "succeeded" and finished["attempts"] == 1, finished
        assert job_of(c, waiting["id"])["status"] == "queued"  # a stopping worker takes nothing new
        stack.start_worker()
        assert submit(c, NOISE).json()["status"] == "succeeded"
        assert job_of(c, waiting["id"])["status"] == "succeeded"


def test_a_second_sigterm_stops_the_job_at_its_next_step_and_another_worker_runs_it(redis_url, tmp_path, measured):
    with (
        running_stack(redis_url, tmp_path, JOB_RETRIES="0") as stack,  # so the stop must not spend an attempt
        client_for(stack, TEST_KEYS[-32]) as c,
    ):
        slow = c.post("/v1/jobs", json=SLOW_SAMPLE).json()
        behind = c.post("/v1/jobs", json=NOISE).json()
        running_at_step(c, slow["id"], 1)
        worker = stack.workers[0]
        worker.send_signal(signal.SIGTERM)
        time.sleep(1.5)  # RQ takes two signals within a second for one
        worker.send_signal(signal.SIGTERM)
        signaled = time.monotonic()
        worker.wait(30)
        exited_s = time.monotonic() - signaled
        assert exited_s < 5  # stopped at the next step, not at the end of the job
        requeued = job_of(c, slow["id"])
        assert requeued["status"] == "queued", requeued
        assert requeued["queue_position"] < job_of(c, behind["id"])["queue_position"]  # back at the front
        assert requeued["error"] is None

        stack.start_worker()
        final = finish(c, slow["id"], 90)
        assert final["status"] == "succeeded", final
        assert final["attempts"] == 2
        assert len(final["artifacts"]) >= 1
        assert "stopped with its worker" in log_of(stack, "worker-0")
        measured(exit_after_second_sigterm_s=round(exited_s, 2), attempts=2, job_retries=0)
