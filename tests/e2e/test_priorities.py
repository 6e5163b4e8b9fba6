"""Priorities and time limits through HTTP, real worker processes and Redis (docs/operations/scaling.md,
"Priorities" and "Time limits"): the order jobs start in, their queue positions, who may ask "high", batching that
never mixes priorities, and a job past its `timeout_s`."""

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.helpers import (
    NOISE,
    SLOW_SAMPLE,
    TEST_KEYS,
    Stack,
    client_for,
    finish,
    job_of,
    running_stack,
    stop,
    submit,
    succeeded,
    wait_until,
)

VIP, PLAIN = TEST_KEYS[-40], TEST_KEYS[-41]
FLOW = {"kind": "sample", "model": "mnist-flow", "prompt": "3", "n": 1, "steps": 8}


@pytest.fixture(scope="module")
def stack(redis_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    env = {"HIGH_PRIORITY_KEYS": VIP, "JOB_TIMEOUT_MAX_S": '{"noise": 30}', "BATCH_WAIT_MS": "200"}
    with running_stack(redis_url, tmp_path_factory.mktemp("stack"), workers=0, **env) as s:
        yield s


def post(client: httpx.Client, body: dict[str, Any]) -> dict[str, Any]:
    response = client.post("/v1/jobs", json=body)
    assert response.status_code == 202, response.text
    job: dict[str, Any] = response.json()
    return job


def burst(stack: Stack) -> None:
    """A worker that runs every queued job of the pool, then exits."""
    assert stack.start_worker("mnist", "--burst").wait(120) == 0


def test_high_before_normal_before_low_with_positions(stack: Stack) -> None:
    with client_for(stack, VIP) as c:
        low = [post(c, {**NOISE, "seed": i, "priority": "low"}) for i in range(2)]
        normal = [post(c, {**NOISE, "seed": i}) for i in range(2)]
        high = post(c, {**NOISE, "seed": 9, "priority": "high"})
        assert high["priority"] == "high" and normal[0]["priority"] == "normal"
        # the jobs of higher priorities come first, whenever they were submitted
        positions = {job["id"]: job_of(c, job["id"])["queue_position"] for job in [*low, *normal, high]}
        assert positions[high["id"]] == 1
        assert [positions[j["id"]] for j in normal] == [2, 3]
        assert [positions[j["id"]] for j in low] == [4, 5]
        burst(stack)
        ended = {job["id"]: finish(c, job["id"], 30) for job in [*low, *normal, high]}
        assert all(job["status"] == "succeeded" for job in ended.values()), ended
        order = sorted(ended, key=lambda job_id: ended[job_id]["started_at"])
        assert order == [high["id"], *(j["id"] for j in normal), *(j["id"] for j in low)]


def test_only_the_listed_keys_may_ask_high(stack: Stack) -> None:
    with client_for(stack, PLAIN) as c:
        response = c.post("/v1/jobs", json={**NOISE, "priority": "high"})
        assert response.status_code == 403, response.text
        error = response.json()["error"]
        assert error["type"] == "forbidden" and "HIGH_PRIORITY_KEYS" in error["message"]
        assert error["details"][0]["loc"] == ["body", "priority"]
        assert c.get("/v1/jobs").json()["jobs"] == []  # nothing was queued
        bad = c.post("/v1/jobs", json={**NOISE, "priority": "urgent"})
        assert bad.status_code == 422 and bad.json()["error"]["details"][0]["loc"][-1] == "priority"


def test_timeout_above_the_kinds_bound_is_422(stack: Stack) -> None:
    with client_for(stack, PLAIN) as c:
        response = c.post("/v1/jobs", json={**NOISE, "timeout_s": 31})
        assert response.status_code == 422, response.text
        error = response.json()["error"]
        assert error["details"][0]["loc"] == ["body", "timeout_s"]
        assert "at most 30 s" in error["message"]
        assert c.post("/v1/jobs", json={**NOISE, "timeout_s": 0}).status_code == 422
        assert c.get("/v1/jobs").json()["jobs"] == []


def batches(log: Path) -> list[set[str]]:
    """The batches the worker's log says it ran, as sets of job ids."""
    found = re.findall(r"batch of \d+ jobs: ([0-9a-f\- ]+)", log.read_text())
    return [set(ids.split()) for ids in found]


def test_a_batch_never_mixes_priorities(stack: Stack) -> None:
    with client_for(stack, VIP) as c:
        low = [post(c, {**FLOW, "seed": i, "priority": "low"}) for i in range(3)]
        high = [post(c, {**FLOW, "seed": 10 + i, "priority": "high"}) for i in range(2)]
        first_log = len(list(stack.log_dir.glob("worker-*.log")))
        burst(stack)
        ended = {job["id"]: finish(c, job["id"], 30) for job in [*low, *high]}
        assert all(job["status"] == "succeeded" for job in ended.values())
        log = stack.log_dir / f"worker-{first_log}.log"
        ran = batches(log)
        high_ids, low_ids = {j["id"] for j in high}, {j["id"] for j in low}
        assert high_ids in ran  # the two high jobs ran together, first
        assert all(not (batch & high_ids and batch & low_ids) for batch in ran)
        assert max(ended[i]["started_at"] for i in high_ids) < min(ended[i]["started_at"] for i in low_ids)


def test_a_job_past_its_time_limit_ends_timed_out_and_the_worker_goes_on(stack: Stack) -> None:
    proc = stack.start_worker("mnist")
    try:
        with client_for(stack, PLAIN) as c:
            slow = post(c, {**SLOW_SAMPLE, "timeout_s": 2})
            ended = finish(c, slow["id"], 60)
            assert ended["status"] == "timed_out", ended
            assert ended["error"]["type"] == "timed_out" and "2 s" in ended["error"]["message"]
            assert ended["artifacts"] == [] and ended["result"] is None  # partial outputs are not served
            assert c.get(f"/v1/jobs/{slow['id']}/artifacts/image_0.png").status_code == 404
            assert proc.poll() is None  # the worker lives on, and takes the next job
            nxt = succeeded(submit(c, {**NOISE, "seed": 3}, wait=60))
            assert nxt["status"] == "succeeded"
            listed = c.get("/v1/jobs", params={"status": "timed_out"}).json()["jobs"]
            assert [j["id"] for j in listed] == [slow["id"]]
    finally:
        stop(proc)
        wait_until(lambda: proc.poll() is not None, 20, "the worker to stop")
