"""Rows of docs/operations/reliability.md for a pool's operations (issue 24): a worker killed while running a high
job puts it back at its priority; a worker whose job timed out takes the next one; a quota slot held by a job whose
worker crashed is freed. Real API, worker processes and Redis; the reaper finds the dead worker's job."""

import signal
import time
from pathlib import Path
from typing import Any

import redis

from tests.helpers import (
    NOISE,
    SLOW_SAMPLE,
    TEST_KEYS,
    client_for,
    finish,
    job_of,
    running_stack,
    stop,
    submit,
    succeeded,
    wait_until,
)

KEY = TEST_KEYS[-90]
ENV = {"HIGH_PRIORITY_KEYS": KEY}


def running(c: Any, job_id: str) -> bool:
    job = job_of(c, job_id)
    return job["status"] == "running" and (job["progress"] or {}).get("step", 0) > 2


def test_a_worker_killed_while_running_a_high_job_requeues_it_at_high(redis_url: str, tmp_path: Path, measured):
    with running_stack(redis_url, tmp_path, workers=1, **ENV) as stack, client_for(stack, KEY) as c:
        high = c.post("/v1/jobs", json={**SLOW_SAMPLE, "priority": "high"}).json()
        wait_until(lambda: running(c, high["id"]), 60, "the high job to run")
        normal = c.post("/v1/jobs", json={**NOISE, "seed": 5}).json()  # waits behind it, at normal
        stop(stack.workers[0], signal.SIGKILL)
        killed = time.monotonic()
        conn = redis.Redis.from_url(stack.env["REDIS_URL"])
        # the reaper finds the job abandoned and puts it back in its own queue: the high one
        wait_until(lambda: high["id"].encode() in conn.lrange("rq:queue:mnist-high", 0, -1), 30, "the requeue")
        requeued_s = time.monotonic() - killed
        again = job_of(c, high["id"])
        assert again["status"] == "queued" and again["queue_position"] == 1  # before the normal job
        assert job_of(c, normal["id"])["queue_position"] == 2
        stack.start_worker()
        final = finish(c, high["id"], 90)
        done = finish(c, normal["id"], 30)
    assert final["status"] == "succeeded" and final["attempts"] == 2, final
    assert done["status"] == "succeeded" and final["started_at"] < done["started_at"]
    measured(requeued_s=round(requeued_s, 1), attempts=final["attempts"], heartbeat_ttl_s=6)


def test_the_worker_takes_the_next_job_after_a_timed_out_one(redis_url: str, tmp_path: Path, measured):
    with running_stack(redis_url, tmp_path, workers=1) as stack, client_for(stack, KEY) as c:
        pid = stack.workers[0].pid
        slow = c.post("/v1/jobs", json={**SLOW_SAMPLE, "timeout_s": 1}).json()
        ended = finish(c, slow["id"], 60)
        assert ended["status"] == "timed_out" and ended["artifacts"] == []
        started = time.monotonic()
        nxt = succeeded(submit(c, {**NOISE, "seed": 8}, wait=60))
        assert stack.workers[0].poll() is None and stack.workers[0].pid == pid  # the same process ran both
    measured(next_job_s=round(time.monotonic() - started, 2), timed_out_after_s=1, next_status=nxt["status"])


def test_a_quota_slot_held_by_a_crashed_workers_job_is_freed(redis_url: str, tmp_path: Path, measured):
    env = {"MAX_ACTIVE_JOBS_PER_KEY": "1", "JOB_RETRIES": "0"}
    with running_stack(redis_url, tmp_path, workers=1, **env) as stack, client_for(stack, KEY) as c:
        job = c.post("/v1/jobs", json=SLOW_SAMPLE).json()
        wait_until(lambda: running(c, job["id"]), 60, "the job to run")
        refused = c.post("/v1/jobs", json=NOISE)
        assert refused.status_code == 429 and refused.json()["error"]["type"] == "quota_exceeded"
        stop(stack.workers[0], signal.SIGKILL)
        killed = time.monotonic()
        lost = finish(c, job["id"], 60)
        assert lost["status"] == "failed" and lost["error"]["type"] == "worker_lost", lost
        freed_s = time.monotonic() - killed
        assert c.get("/v1/usage").json()["active_jobs"]["used"] == 0
        stack.start_worker()
        assert succeeded(submit(c, NOISE, wait=60))["status"] == "succeeded"
    measured(slot_freed_s=round(freed_s, 1), heartbeat_ttl_s=6, job_retries=0)
