"""Idempotency, listing, cancel, and jobs surviving a dead worker: real API, real workers, real Redis."""

import signal
import time

import httpx
import numpy as np
import pytest

from tests.helpers import TEST_KEYS, client_for, png, running_stack, stop, wait_until

DIGIT = {"dataset": "mnist-5k", "index": 0}
NOISE = {"kind": "noise", "model": "mnist-ddpm", "image": DIGIT, "sigmas": [0.1]}


def long_job(client: httpx.Client, levels: int = 40) -> dict:
    """A real job that runs for seconds: many noise levels on a large upload, each saved as it is made."""
    pixels = np.random.default_rng(0).integers(0, 255, (1536, 1536), dtype=np.uint8)
    upload = client.post("/v1/uploads", content=png(pixels), headers={"Content-Type": "image/png"}).json()
    body = {
        "kind": "noise",
        "model": "mnist-ddpm",
        "image": {"upload_id": upload["id"]},
        "sigmas": [0.01 * i for i in range(levels)],
        "seed": 1,
    }
    response = client.post("/v1/jobs", json=body)
    assert response.status_code == 202, response.text
    return response.json()


def get(client: httpx.Client, job_id: str, wait: float = 0) -> dict:
    response = client.get(f"/v1/jobs/{job_id}", params={"wait": wait} if wait else None)
    assert response.status_code == 200, response.text
    return response.json()


def test_idempotency_key_replays_and_conflicts(client):
    first = client.post("/v1/jobs", json=NOISE, headers={"Idempotency-Key": "abc"})
    assert first.status_code == 202
    again = client.post("/v1/jobs", json=dict(reversed(NOISE.items())), headers={"Idempotency-Key": "abc"})
    assert again.status_code in (200, 202)
    assert again.json()["id"] == first.json()["id"]
    other = client.post("/v1/jobs", json={**NOISE, "sigmas": [0.2]}, headers={"Idempotency-Key": "abc"})
    assert other.status_code == 409
    assert other.json()["error"]["type"] == "conflict"
    fresh = client.post("/v1/jobs", json=NOISE, headers={"Idempotency-Key": "def"})
    assert fresh.json()["id"] != first.json()["id"]


def test_listing_pages_newest_first_with_filters(client):
    ids = [client.post("/v1/jobs", json={**NOISE, "seed": i}).json()["id"] for i in range(5)]
    blur = client.post("/v1/jobs", json={"kind": "denoise", "model": "mnist-ddpm", "image": DIGIT}).json()["id"]
    seen, cursor = [], None
    while True:
        page = client.get("/v1/jobs", params={"limit": 2, "kind": "noise", **({"cursor": cursor} if cursor else {})})
        assert page.status_code == 200
        body = page.json()
        assert len(body["jobs"]) <= 2
        seen += [j["id"] for j in body["jobs"]]
        cursor = body["next_cursor"]
        if cursor is None:
            break
    assert seen == list(reversed(ids))
    assert [j["id"] for j in client.get("/v1/jobs", params={"kind": "denoise"}).json()["jobs"]] == [blur]
    get(client, blur, wait=20)
    for job_id in ids:
        get(client, job_id, wait=20)
    succeeded = client.get("/v1/jobs", params={"status": "succeeded", "limit": 100}).json()["jobs"]
    assert {j["id"] for j in succeeded} == {*ids, blur}
    assert client.get("/v1/jobs", params={"status": "queued"}).json()["jobs"] == []
    assert client.get("/v1/jobs", params={"cursor": "garbage"}).status_code == 422


def test_cancel_running_job_stops_at_its_next_step_and_keeps_what_it_made(client):
    job = long_job(client)
    running = wait_until(
        lambda: (j := get(client, job["id"]))["status"] == "running" and j["artifacts"] and j,
        60,
        "the job to start making images",
    )
    canceled = client.delete(f"/v1/jobs/{job['id']}")
    assert canceled.status_code == 202
    assert client.delete(f"/v1/jobs/{job['id']}").status_code == 202  # idempotent
    final = get(client, job["id"], wait=30)
    assert final["status"] == "canceled"
    made = len(final["artifacts"])
    assert len(running["artifacts"]) <= made < 40
    assert client.get(final["artifacts"][0]["url"]).status_code == 200
    time.sleep(1)
    assert len(get(client, job["id"])["artifacts"]) == made  # it really stopped


def test_a_canceled_queued_job_never_runs(redis_url, tmp_path):
    with running_stack(redis_url, tmp_path, workers=0) as stack, client_for(stack, TEST_KEYS[-2]) as c:
        kept, dropped = (c.post("/v1/jobs", json={**NOISE, "seed": i}).json() for i in range(2))
        assert dropped["status"] == "queued"
        assert dropped["queue_position"] is not None and dropped["queue_position"] >= 1
        canceled = c.delete(f"/v1/jobs/{dropped['id']}").json()
        assert canceled["status"] == "canceled"
        assert canceled["finished_at"] is not None
        worker = stack.start_worker("mnist", "--burst")
        assert worker.wait(60) == 0
        assert get(c, kept["id"])["status"] == "succeeded"
        dropped = get(c, dropped["id"])
        assert dropped["status"] == "canceled"
        assert dropped["artifacts"] == [] and dropped["started_at"] is None


@pytest.mark.slow
def test_a_job_whose_worker_is_killed_is_retried_and_succeeds(redis_url, tmp_path):
    with running_stack(redis_url, tmp_path, workers=1) as stack, client_for(stack, TEST_KEYS[-3]) as c:
        job = long_job(c, levels=12)
        wait_until(lambda: get(c, job["id"])["status"] == "running", 60, "the job to start")
        stop(stack.workers[0], signal.SIGKILL)
        killed_at = time.monotonic()
        stack.start_worker()
        final = get(c, job["id"], wait=60)
        while final["status"] not in ("succeeded", "failed") and time.monotonic() - killed_at < 90:
            final = get(c, job["id"], wait=30)
        assert final["status"] == "succeeded", final
        assert final["attempts"] == 2
        assert time.monotonic() - killed_at < 60
        assert len(final["artifacts"]) == 13


def test_a_job_fails_as_worker_lost_after_its_last_attempt(redis_url, tmp_path):
    with running_stack(redis_url, tmp_path, workers=1, JOB_RETRIES="0") as stack, client_for(stack, TEST_KEYS[-4]) as c:
        job = long_job(c, levels=12)
        wait_until(lambda: get(c, job["id"])["status"] == "running", 60, "the job to start")
        stop(stack.workers[0], signal.SIGKILL)
        final = wait_until(lambda: (j := get(c, job["id"]))["status"] == "failed" and j, 40, "the job to fail")
        assert final["error"]["type"] == "worker_lost"


def test_redis_unreachable_is_503_not_500_nor_a_hang(tmp_path):
    from diffusion_jobs.redis_server import free_port

    dead = f"redis://127.0.0.1:{free_port()}/0"  # nothing listens there
    with running_stack(dead, tmp_path, workers=0, fresh=False) as stack:
        headers = {"Authorization": f"Bearer {TEST_KEYS[-5]}"}
        started = time.monotonic()
        response = httpx.post(stack.url + "/v1/jobs", json=NOISE, headers=headers, timeout=30)
        assert time.monotonic() - started < 10
        assert response.status_code == 503
        assert response.headers["Retry-After"]
        assert response.json()["error"]["type"] == "unavailable"
        assert httpx.get(stack.url + "/readyz", timeout=30).status_code == 503
        assert httpx.get(stack.url + "/healthz").status_code == 200
