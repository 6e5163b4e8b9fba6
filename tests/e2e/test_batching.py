"""Cross-job batching through HTTP, a real worker process and Redis: jobs are queued while no worker runs, then one
starts and finds them waiting. The shipped models, so the pixels compared are digits."""

import signal
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import httpx
import pytest

from tests.helpers import (
    Stack,
    artifact,
    assert_same_pixels,
    finish,
    job_of,
    names,
    running_stack,
    stop,
    submit,
    succeeded,
    wait_until,
)

FLOW = {"kind": "sample", "model": "mnist-flow", "steps": 10}
DDPM = {"kind": "sample", "model": "mnist-ddpm", "n": 1}  # 300 steps: a batch of three runs for seconds


@pytest.fixture(scope="module")
def stack(redis_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    with running_stack(redis_url, tmp_path_factory.mktemp("stack"), workers=0) as s:
        yield s


@contextmanager
def worker(stack: Stack, **env: str) -> Iterator[None]:
    proc = stack.start_worker(**env)
    try:
        yield
    finally:
        stop(proc)


def queue(client: httpx.Client, *bodies: dict[str, Any]) -> list[str]:
    """Submits each body (no wait): they queue, in order."""
    ids = []
    for body in bodies:
        response = submit(client, body, wait=0)
        assert response.status_code == 202, response.text
        ids.append(response.json()["id"])
    return ids


def all_finished(client: httpx.Client, ids: list[str], timeout: float = 120) -> list[dict[str, Any]]:
    return [finish(client, job_id, timeout) for job_id in ids]


def test_compatible_jobs_run_as_one_batch_each_with_the_pixels_it_gets_alone(stack, client):
    together = [
        {**FLOW, "prompt": "3", "n": 2, "seed": 1},
        {**FLOW, "class_label": 7, "n": 1, "seed": 50, "frames": True},
        {**FLOW, "prompt": "1", "n": 3, "seed": 9},
    ]
    apart = [
        {**FLOW, "steps": 20, "prompt": "3", "n": 1, "seed": 1},  # another schedule
        {**FLOW, "guidance_scale": 2.0, "prompt": "3", "n": 1, "seed": 1},  # other guidance
        {**FLOW, "n": 1, "seed": 1},  # unconditional
        {**DDPM, "stride": 30, "prompt": "3", "seed": 1},  # another model
        {"kind": "noise", "model": "mnist-flow", "image": {"dataset": "mnist-5k", "index": 0}, "sigmas": [0.5]},
    ]
    ids = queue(client, together[0], *apart, *together[1:])  # incompatible jobs between: they are jumped
    with worker(stack):
        jobs = all_finished(client, ids)
        assert [job["status"] for job in jobs] == ["succeeded"] * len(ids)
        batched = [jobs[0], *jobs[-2:]]
        for job in batched:
            assert job["result"]["batch"] == {"jobs": 3, "images": 6}
        for job in jobs[1:-2]:
            assert "batch" not in job["result"], job["params"]
        assert names(batched[1]) == {"image_0.png", "frames.gif"}
        assert names(batched[2]) == {"image_0.png", "image_1.png", "image_2.png", "grid.png"}
        assert batched[2]["result"]["seeds"] == [9, 10, 11]
        assert batched[1]["progress"]["step"] == batched[1]["progress"]["total"] == 10

        for body, job in zip(together, batched, strict=True):
            alone = succeeded(submit(client, body, wait=60))  # one at a time: nothing to batch with
            assert "batch" not in alone["result"]
            assert names(alone) == names(job)
            for name in names(job) - {"frames.gif"}:
                assert_same_pixels(artifact(client, job, name), artifact(client, alone, name))


def test_canceling_one_job_of_a_batch_leaves_the_others_running(stack, client):
    ids = queue(client, *({**DDPM, "prompt": str(d), "seed": d} for d in (1, 2, 3)))
    with worker(stack):
        wait_until(lambda: (job_of(client, ids[0])["progress"] or {}).get("step", 0) >= 20, 60, "the batch to run")
        assert client.delete(f"/v1/jobs/{ids[1]}").status_code == 202
        canceled = wait_until(lambda: (j := job_of(client, ids[1]))["status"] == "canceled" and j, 10, "the cancel")
        assert job_of(client, ids[0])["status"] == "running"
        first, _, last = all_finished(client, ids)
    assert first["status"] == last["status"] == "succeeded"
    assert first["result"]["batch"] == last["result"]["batch"] == {"jobs": 3, "images": 3}
    assert names(first) == names(last) == {"image_0.png"}
    again = job_of(client, ids[1])
    assert again["status"] == "canceled" and again["artifacts"] == []
    assert again["progress"]["step"] < again["progress"]["total"]
    assert again["progress"] == canceled["progress"]  # nothing written for it after its cancel


def test_a_worker_killed_mid_batch_loses_no_job_and_each_is_retried_alone(stack, client):
    ids = queue(client, *({**DDPM, "prompt": str(d), "seed": d} for d in (4, 5, 6)))
    with worker(stack):
        wait_until(lambda: (job_of(client, ids[0])["progress"] or {}).get("step", 0) >= 20, 60, "the batch to run")
        stack.workers[-1].send_signal(signal.SIGKILL)
    with worker(stack):
        jobs = all_finished(client, ids)
    assert [job["status"] for job in jobs] == ["succeeded"] * 3
    for job in jobs:
        assert job["attempts"] == 2
        assert "batch" not in job["result"]  # had one of them killed the worker, the others do not pay again


def test_batching_off_runs_every_job_alone(stack, client):
    ids = queue(client, *({**FLOW, "prompt": str(d), "n": 1, "seed": d} for d in (1, 2)))
    with worker(stack, BATCH_MAX_JOBS="1"):
        jobs = all_finished(client, ids)
    assert [job["status"] for job in jobs] == ["succeeded"] * 2
    assert all("batch" not in job["result"] for job in jobs)
