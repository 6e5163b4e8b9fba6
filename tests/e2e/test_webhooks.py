"""Webhooks end to end: real Redis, the real API (its deliverer), a real worker, and a real HTTP receiver per test
(`http.server` on a free port, in a thread) that records every POST it gets."""

import hashlib
import hmac
import json
import signal
import threading
import time
from collections.abc import Iterator
from contextlib import suppress
from dataclasses import dataclass
from email.message import Message
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from itertools import pairwise
from typing import Any

import httpx
import pytest
import redis

from core import keys
from diffusion_jobs.redis_server import free_port
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
    wait_until,
)

SECRET = "test-webhook-secret"
MAX_ATTEMPTS = 4
ENV = {
    "WEBHOOK_SECRET": SECRET,
    "WEBHOOK_MAX_ATTEMPTS": str(MAX_ATTEMPTS),
    "WEBHOOK_BACKOFF_S": "0.25",  # retries 0.25, 0.5, 1 s after a failed try
    "WEBHOOK_TIMEOUT_S": "5",
}
SAMPLE = {"kind": "sample", "model": "mnist-ddpm", "prompt": "3", "n": 8, "seed": 7}  # a few seconds on 2 cores
QUEUED_TRAIN = {"kind": "train", "name": "never-trained", "dataset": "mnist-5k", "objective": "flow", "epochs": 1}


@dataclass
class Call:
    at: float  # time.monotonic() when it arrived
    headers: Message
    body: bytes

    @property
    def event(self) -> str | None:
        return self.headers["X-Diffusion-Jobs-Event"]

    @property
    def job(self) -> dict[str, Any]:
        found: dict[str, Any] = json.loads(self.body)
        return found


class Receiver:
    """A webhook receiver: records each POST and answers `status`; with `hold_first`, the first POST's answer waits
    until `release` (or 30 s)."""

    def __init__(self, port: int = 0, status: int = 200, hold_first: bool = False) -> None:
        self.calls: list[Call] = []
        self.status = status
        self.release = threading.Event()
        if not hold_first:
            self.release.set()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                receiver.calls.append(Call(time.monotonic(), self.headers, body))
                if len(receiver.calls) == 1:
                    receiver.release.wait(30)
                with suppress(OSError):  # the sender may be gone
                    self.send_response(receiver.status)
                    self.send_header("Content-Length", "0")
                    self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}/hooks/jobs"

    def __enter__(self) -> "Receiver":
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release.set()
        self.server.shutdown()
        self.server.server_close()

    def events(self) -> list[str | None]:
        return [c.event for c in self.calls]


def verifies(secret: str, headers: Message, body: bytes) -> bool:
    """What docs/client.md ("Webhooks") tells a receiver to do."""
    signed = headers["X-Diffusion-Jobs-Timestamp"].encode() + b"." + body
    expected = "sha256=" + hmac.new(secret.encode(), signed, hashlib.sha256).hexdigest()
    return hmac.compare_digest(expected, headers["X-Diffusion-Jobs-Signature"])


@pytest.fixture(scope="module")
def hook_stack(redis_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    with running_stack(redis_url, tmp_path_factory.mktemp("webhooks"), **ENV) as stack:
        yield stack


@pytest.fixture
def client(hook_stack: Stack, api_key: str) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=hook_stack.url, headers={"Authorization": f"Bearer {api_key}"}, timeout=60) as c:
        yield c


def submitted(client: httpx.Client, body: dict[str, Any]) -> dict[str, Any]:
    response = client.post("/v1/jobs", json=body)
    assert response.status_code == 202, response.text
    job: dict[str, Any] = response.json()
    return job


def test_a_sample_job_posts_start_progress_and_completed_each_signed(client):
    with Receiver() as receiver:
        events = ["start", "progress", "completed"]
        job = submitted(client, {**SAMPLE, "webhook": receiver.url, "webhook_events": events})
        assert job["params"]["webhook"] == receiver.url and job["params"]["webhook_events"] == events
        final = finish(client, job["id"], 120)
        assert final["status"] == "succeeded"
        wait_until(lambda: "completed" in receiver.events(), 15, "the completed POST")
        time.sleep(0.5)  # nothing more may follow

    seen = receiver.events()
    assert seen[0] == "start" and seen[-1] == "completed" and seen.count("completed") == 1, seen
    progress = [c for c in receiver.calls if c.event == "progress"]
    assert progress, seen
    assert set(seen) == set(events)
    for call in receiver.calls:
        assert verifies(SECRET, call.headers, call.body), call.event
        assert not verifies("another secret", call.headers, call.body)
        assert abs(int(call.headers["X-Diffusion-Jobs-Timestamp"]) - time.time()) < 120
        assert call.headers["Content-Type"] == "application/json"
        assert call.job["id"] == job["id"] and call.job["params"] == final["params"]
    assert len({c.headers["X-Diffusion-Jobs-Delivery"] for c in receiver.calls}) == len(receiver.calls)
    assert all(c.job["status"] in ("running", "succeeded") for c in progress)
    assert all(b.at - a.at >= 0.7 for a, b in pairwise(progress)), [c.at for c in progress]
    completed = receiver.calls[-1].job
    assert completed == job_of(client, job["id"])  # the Job, exactly as GET /v1/jobs/{id} shows it
    assert completed["status"] == "succeeded" and {a["name"] for a in completed["artifacts"]} >= {"grid.png"}


def test_a_job_without_webhook_events_gets_completed_only(client):
    with Receiver() as receiver:
        job = submitted(client, {**NOISE, "webhook": receiver.url})
        assert job["params"]["webhook_events"] == ["completed"]
        assert finish(client, job["id"], 60)["status"] == "succeeded"
        wait_until(lambda: receiver.calls, 15, "the completed POST")
        time.sleep(0.5)
    assert receiver.events() == ["completed"]
    assert receiver.calls[0].job["status"] == "succeeded"


def pending_tries(stack: Stack, job_id: str) -> int:
    """How many tries of the job's delivery failed so far (its record waits in the pending zset)."""
    conn = redis.Redis.from_url(stack.env["REDIS_URL"])
    records = [json.loads(raw) for raw in conn.zrange(keys.WEBHOOK_PENDING, 0, -1)]
    return max((r["tries"] for r in records if r["job"] == job_id), default=0)


def test_a_receiver_down_at_first_gets_completed_after_retries(client, hook_stack):
    port = free_port()  # nothing listens there yet: connection refused
    job = submitted(client, {**NOISE, "webhook": f"http://127.0.0.1:{port}/hooks/jobs"})
    assert finish(client, job["id"], 60)["status"] == "succeeded"
    wait_until(lambda: pending_tries(hook_stack, job["id"]) >= 2, 15, "two failed tries")
    with Receiver(port) as receiver:
        wait_until(lambda: receiver.calls, 15, "the completed POST once the receiver is up")
        time.sleep(0.5)
    assert receiver.events() == ["completed"]
    assert receiver.calls[0].job["status"] == "succeeded"
    assert verifies(SECRET, receiver.calls[0].headers, receiver.calls[0].body)
    assert pending_tries(hook_stack, job["id"]) == 0  # delivered: no record left


def test_a_receiver_that_always_fails_gets_exactly_max_attempts(client, hook_stack):
    with Receiver(status=500) as receiver:
        job = submitted(client, {**NOISE, "webhook": receiver.url})
        assert finish(client, job["id"], 60)["status"] == "succeeded"
        wait_until(lambda: len(receiver.calls) >= MAX_ATTEMPTS, 30, f"{MAX_ATTEMPTS} tries")
        time.sleep(3)  # a fifth try would come 2 s after the fourth
    assert len(receiver.calls) == MAX_ATTEMPTS
    assert len({c.headers["X-Diffusion-Jobs-Delivery"] for c in receiver.calls}) == 1  # one delivery, tried again
    gaps = [b.at - a.at for a, b in pairwise(receiver.calls)]
    assert all(later > earlier for earlier, later in pairwise(gaps)), gaps  # backing off
    assert pending_tries(hook_stack, job["id"]) == 0  # dropped


def test_a_queued_job_canceled_by_delete_posts_completed_canceled(client):
    with Receiver() as receiver:  # no worker serves `train` here: the job stays queued
        job = submitted(client, {**QUEUED_TRAIN, "webhook": receiver.url, "webhook_events": ["start", "completed"]})
        assert job["status"] == "queued"
        assert client.delete(f"/v1/jobs/{job['id']}").json()["status"] == "canceled"
        wait_until(lambda: receiver.calls, 15, "the completed POST")
        time.sleep(0.5)
    assert receiver.events() == ["completed"]
    assert receiver.calls[0].job["status"] == "canceled"
    assert receiver.calls[0].job == job_of(client, job["id"])


@pytest.mark.parametrize(
    ("fields", "loc"),
    [
        ({"webhook": "ftp://x"}, ["body", "noise", "webhook"]),
        ({"webhook": "not a url"}, ["body", "noise", "webhook"]),
        ({"webhook": "http://127.0.0.1/h", "webhook_events": ["nope"]}, ["body", "noise", "webhook_events", 0]),
        ({"webhook": "http://127.0.0.1/h", "webhook_events": []}, ["body", "noise", "webhook_events"]),
        ({"webhook_events": ["start"]}, ["body", "noise", "webhook_events"]),
    ],
)
def test_a_bad_webhook_is_a_422_naming_the_field(client, fields, loc):
    response = client.post("/v1/jobs", json={**NOISE, **fields})
    assert response.status_code == 422, response.text
    error = response.json()["error"]
    assert error["type"] == "validation_error"
    assert error["details"][0]["loc"] == loc
    assert ".".join(str(p) for p in loc[1:]) in error["message"]


def test_without_a_secret_a_webhook_is_refused(redis_url, tmp_path):
    with running_stack(redis_url, tmp_path, workers=0) as stack:
        headers = {"Authorization": f"Bearer {TEST_KEYS[-6]}"}
        response = httpx.post(stack.url + "/v1/jobs", json={**NOISE, "webhook": "http://127.0.0.1/h"}, headers=headers)
        assert response.status_code == 422, response.text
        assert response.json()["error"]["details"][0]["loc"] == ["body", "webhook"]
        assert "WEBHOOK_SECRET" in response.json()["error"]["message"]
        assert httpx.post(stack.url + "/v1/jobs", json=NOISE, headers=headers).status_code == 202


def test_a_job_failed_as_worker_lost_by_the_reaper_posts_completed_failed(redis_url, tmp_path):
    env = {**ENV, "JOB_RETRIES": "0"}
    with (
        running_stack(redis_url, tmp_path, workers=1, **env) as stack,
        client_for(stack, TEST_KEYS[-7]) as c,
        Receiver() as receiver,
    ):
        job = submitted(c, {**SLOW_SAMPLE, "webhook": receiver.url, "webhook_events": ["start", "completed"]})
        wait_until(lambda: "start" in receiver.events(), 60, "the job to start")
        stop(stack.workers[0], signal.SIGKILL)
        wait_until(lambda: "completed" in receiver.events(), 60, "the completed POST")
        time.sleep(0.5)
        assert receiver.events() == ["start", "completed"]
        failed = receiver.calls[-1].job
        assert failed["status"] == "failed" and failed["error"]["type"] == "worker_lost"
        assert failed == job_of(c, job["id"])


def test_a_post_in_flight_when_its_deliverer_dies_is_tried_again(redis_url, tmp_path):
    """The API is killed while its deliverer waits on a receiver's answer; the next API process tries the same
    delivery again once its lease (4 x WEBHOOK_TIMEOUT_S + 5 s) runs out. Nothing accepted is lost."""
    env = {**ENV, "WEBHOOK_TIMEOUT_S": "1"}
    with (
        running_stack(redis_url, tmp_path, workers=0, **env) as stack,
        client_for(stack, TEST_KEYS[-8]) as c,
        Receiver(hold_first=True) as receiver,
    ):
        job = submitted(c, {**QUEUED_TRAIN, "webhook": receiver.url})
        c.delete(f"/v1/jobs/{job['id']}")
        wait_until(lambda: receiver.calls, 15, "the first try")
        assert stack.api is not None
        stop(stack.api, signal.SIGKILL)  # within the try's 1 s timeout: it dies with the POST in flight
        receiver.release.set()
        stack.start_api()
        wait_until(lambda: len(receiver.calls) == 2, 30, "the second try, from the new API process")
        first, second = receiver.calls
        assert second.headers["X-Diffusion-Jobs-Delivery"] == first.headers["X-Diffusion-Jobs-Delivery"]
        assert second.event == "completed" and second.job["status"] == "canceled"
        assert second.at - first.at >= 5  # not before the lease ran out
        time.sleep(0.5)
        assert len(receiver.calls) == 2
