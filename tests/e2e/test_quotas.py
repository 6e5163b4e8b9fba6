"""Quotas and usage through HTTP and real Redis (docs/operations/quotas.md): MAX_ACTIVE_JOBS_PER_KEY and
DAILY_IMAGES_PER_KEY answer 429 `quota_exceeded` with the limit and when it frees, other keys unaffected; a slot
frees when a job ends; GET /v1/usage says where a key stands."""

from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import pytest

from tests.helpers import NOISE, TEST_KEYS, Stack, client_for, finish, running_stack, stop, submit, succeeded

FLOW = {"kind": "sample", "model": "mnist-flow", "prompt": "3", "steps": 4}
KEYS = iter(TEST_KEYS[-80:-60])


@pytest.fixture(scope="module")
def stack(redis_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    env = {"MAX_ACTIVE_JOBS_PER_KEY": "3", "DAILY_IMAGES_PER_KEY": "20"}
    with running_stack(redis_url, tmp_path_factory.mktemp("stack"), workers=0, **env) as s:
        yield s


@pytest.fixture
def c(stack: Stack) -> Iterator[httpx.Client]:
    with client_for(stack, next(KEYS)) as client:
        yield client


def quota_error(response: httpx.Response) -> dict[str, Any]:
    assert response.status_code == 429, response.text
    assert int(response.headers["Retry-After"]) >= 1
    error: dict[str, Any] = response.json()["error"]
    assert error["type"] == "quota_exceeded"
    return error


def test_active_jobs_quota_per_key_and_its_slot_frees_on_cancel(stack: Stack, c: httpx.Client) -> None:
    queued = [c.post("/v1/jobs", json={**NOISE, "seed": i}).json() for i in range(3)]
    error = quota_error(c.post("/v1/jobs", json=NOISE))
    assert error["details"][0] | {"frees": None} == {
        "quota": "active_jobs",
        "limit": 3,
        "used": 3,
        "asked": 1,
        "frees": None,
    }
    assert "MAX_ACTIVE_JOBS_PER_KEY" in error["message"]
    assert len(c.get("/v1/jobs").json()["jobs"]) == 3  # the refused job is nowhere
    with client_for(stack, next(KEYS)) as other:  # another key is not affected
        assert other.post("/v1/jobs", json=NOISE).status_code == 202
    usage = c.get("/v1/usage").json()
    assert usage["active_jobs"] == {"used": 3, "limit": 3, "resets_at": None}
    c.delete(f"/v1/jobs/{queued[0]['id']}")
    assert c.post("/v1/jobs", json=NOISE).status_code == 202  # the canceled job's slot is free again


def test_concurrent_submissions_never_pass_the_quota(stack: Stack, c: httpx.Client) -> None:
    with ThreadPoolExecutor(8) as pool:
        codes = list(pool.map(lambda i: c.post("/v1/jobs", json={**NOISE, "seed": i}).status_code, range(12)))
    assert sorted(codes) == [202] * 3 + [429] * 9
    assert c.get("/v1/usage").json()["active_jobs"]["used"] == 3


def test_daily_images_budget(stack: Stack, c: httpx.Client) -> None:
    first = c.post("/v1/jobs", json={**FLOW, "n": 12})
    assert first.status_code == 202, first.text
    error = quota_error(c.post("/v1/jobs", json={**FLOW, "n": 9}))
    detail = error["details"][0]
    assert (detail["quota"], detail["limit"], detail["used"], detail["asked"]) == ("daily_images", 20, 12, 9)
    assert detail["frees"].endswith("T00:00:00Z") and detail["frees"] in error["message"]
    assert c.post("/v1/jobs", json={**FLOW, "n": 8}).status_code == 202  # exactly the budget
    usage = c.get("/v1/usage").json()
    assert usage["images_today"]["used"] == 20 and usage["images_today"]["limit"] == 20
    c.delete(f"/v1/jobs/{first.json()['id']}")  # canceled before it ran: its images come back
    assert c.get("/v1/usage").json()["images_today"]["used"] == 8


def test_a_job_that_ran_frees_its_slot_and_counts_its_seconds(stack: Stack, c: httpx.Client) -> None:
    jobs = [c.post("/v1/jobs", json={**FLOW, "n": 1, "seed": i}).json() for i in range(3)]
    assert quota_error(c.post("/v1/jobs", json=NOISE))
    worker = stack.start_worker("mnist", "--burst")
    try:
        assert worker.wait(120) == 0
    finally:
        stop(worker)
    assert all(finish(c, job["id"], 30)["status"] == "succeeded" for job in jobs)
    usage = c.get("/v1/usage").json()
    assert usage["active_jobs"]["used"] == 0
    assert usage["gpu_seconds_today"] > 0
    assert usage["images_today"]["used"] == 3
    assert c.post("/v1/jobs", json=NOISE).status_code == 202


def test_without_quotas_usage_still_counts(redis_url: str, tmp_path: Any) -> None:
    with running_stack(redis_url, tmp_path, workers=1) as s, client_for(s, TEST_KEYS[-59]) as c:
        succeeded(submit(c, {**FLOW, "n": 2}, wait=60))
        usage = c.get("/v1/usage").json()
        assert usage["active_jobs"] == {"used": 0, "limit": None, "resets_at": None}
        assert usage["images_today"]["used"] == 2 and usage["images_today"]["limit"] is None
