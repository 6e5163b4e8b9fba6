"""Administration through the real stack (docs/operations/administration.md): admin keys only, the workers and
queues as RQ holds them, pausing a queue, retrying failed jobs, and rq-dashboard on the same Redis."""

import socket
import subprocess
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import redis

from diffusion_jobs.redis_server import free_port
from tests.helpers import TEST_KEYS, Stack, cli, client_for, finish, job_of, running_stack, stop, submit, wait_until

ADMIN, USER, OTHER = TEST_KEYS[-130], TEST_KEYS[-131], TEST_KEYS[-132]
NOISE = {"kind": "noise", "model": "mnist-ddpm", "image": {"dataset": "mnist-5k", "index": 3}, "sigmas": [0.2]}
ROUTES = [
    ("GET", "/v1/admin/workers"),
    ("GET", "/v1/admin/queues"),
    ("POST", "/v1/admin/queues/mnist/pause"),
    ("POST", "/v1/admin/queues/mnist/resume"),
    ("POST", "/v1/admin/queues/mnist/requeue-failed"),
    ("POST", "/v1/admin/jobs/some-job/retry"),
]
TINY_DENOISER = {
    "kind": "train",
    "name": "admin-retry",
    "dataset": "mnist-5k",
    "objective": "denoiser",
    "hidden": 8,
    "epochs": 1,
    "limit": 200,
    "batch_size": 32,
    "seed": 1,
}


SETTINGS = {"ADMIN_KEYS": ADMIN, "JOB_RETRIES": "0"}  # a job that raises fails on its first attempt
_workers: dict[tuple[str, str], subprocess.Popen[bytes]] = {}  # (stack url, queue) -> its worker


@pytest.fixture(scope="module")
def stack(redis_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """The API with ADMIN_KEYS; each test starts the workers it needs (`a_worker`), once for the module."""
    with running_stack(redis_url, tmp_path_factory.mktemp("admin"), workers=0, **SETTINGS) as s:
        yield s


def a_worker(stack: Stack, queue: str = "mnist") -> subprocess.Popen[bytes]:
    """The stack's worker on `queue`, started once and registered (CUDA_VISIBLE_DEVICES=7: what it must report)."""
    if (stack.url, queue) not in _workers:
        proc = _workers[stack.url, queue] = stack.start_worker(queue, CUDA_VISIBLE_DEVICES="7")
        listed = lambda: any(w["pid"] == proc.pid for w in admin_get(stack, "/v1/admin/workers")["workers"])  # noqa: E731
        wait_until(listed, 60, f"the {queue} worker to register")
    return _workers[stack.url, queue]


def admin_get(stack: Stack, path: str) -> Any:
    with client_for(stack, ADMIN) as admin:
        response = admin.get(path)
    assert response.status_code == 200, response.text
    return response.json()


def queue_of(stack: Stack, name: str) -> dict[str, Any]:
    (found,) = [q for q in admin_get(stack, "/v1/admin/queues")["queues"] if q["name"] == name]
    return found


def test_every_admin_route_refuses_a_key_not_in_admin_keys(stack):
    with client_for(stack, USER) as user, httpx.Client(base_url=stack.url) as anonymous:
        for method, path in ROUTES:
            refused = user.request(method, path)
            assert refused.status_code == 403, (path, refused.text)
            error = refused.json()["error"]
            assert error["type"] == "forbidden"
            assert "ADMIN_KEYS" in error["message"]
            assert anonymous.request(method, path).status_code == 401, path
    assert not queue_of(stack, "mnist")["paused"]  # the refused pause changed nothing
    with client_for(stack, ADMIN) as admin:
        unknown = admin.post("/v1/admin/queues/no-such-queue/pause")
        assert unknown.status_code == 404 and "GET /v1/admin/queues" in unknown.json()["error"]["message"]
        assert admin.post("/v1/admin/jobs/no-such-job/retry").status_code == 404


def test_queues_count_jobs_waiting_without_a_worker_and_workers_show_the_real_process(redis_url, tmp_path):
    with running_stack(redis_url, tmp_path, workers=0, **SETTINGS) as stack, client_for(stack, USER) as user:
        ids = [submit(user, NOISE, wait=0).json()["id"] for _ in range(3)]
        queues = {q["name"]: q for q in admin_get(stack, "/v1/admin/queues")["queues"]}
        assert {"mnist", "mnist-high", "mnist-low", "deepfloyd", "train"} <= set(queues)
        assert (queues["mnist"]["queued"], queues["mnist"]["started"], queues["mnist"]["workers"]) == (3, 0, 0)
        assert queues["mnist"]["pool"] == "mnist" and queues["mnist"]["priority"] == "normal"
        assert queues["mnist-high"]["queued"] == 0 and queues["mnist-high"]["priority"] == "high"
        assert admin_get(stack, "/v1/admin/workers") == {"workers": []}

        proc = a_worker(stack)
        for job_id in ids:
            assert finish(user, job_id, 90)["status"] == "succeeded"

        (worker,) = admin_get(stack, "/v1/admin/workers")["workers"]
        assert worker["pid"] == proc.pid and worker["hostname"] == socket.gethostname()
        assert "mnist" in worker["queues"]
        assert worker["cuda_visible_devices"] == "7" and worker["gpu"] == ""  # no GPU 7 here: torch sees none
        assert worker["last_heartbeat"] and worker["birth"]
        assert worker["state"] in ("idle", "busy")
        after = queue_of(stack, "mnist")
        assert (after["queued"], after["started"], after["workers"]) == (0, 0, 1)


def test_a_paused_queue_keeps_its_jobs_queued_while_the_worker_idles_and_runs_them_once_resumed(stack):
    proc = a_worker(stack)
    with client_for(stack, ADMIN) as admin, client_for(stack, USER) as user:
        paused = admin.post("/v1/admin/queues/mnist/pause")
        assert paused.status_code == 200 and paused.json()["paused"] is True
        accepted = submit(user, NOISE, wait=0)
        assert accepted.status_code == 202  # submissions are still accepted
        job_id = accepted.json()["id"]
        time.sleep(5)  # more than two of the worker's waits (HookedWorker.pause_poll_s)
        assert job_of(user, job_id)["status"] == "queued"
        assert queue_of(stack, "mnist")["queued"] == 1
        (worker,) = [w for w in admin_get(stack, "/v1/admin/workers")["workers"] if w["pid"] == proc.pid]
        assert worker["current_job_id"] is None and worker["state"] == "idle"

        resumed = admin.post("/v1/admin/queues/mnist/resume")
        assert resumed.status_code == 200 and resumed.json()["paused"] is False
        assert finish(user, job_id, 60)["status"] == "succeeded"
        assert proc.poll() is None


def test_failed_jobs_are_retried_one_by_one_and_from_the_failed_registry_and_then_succeed(stack):
    a_worker(stack, "train")
    a_worker(stack)
    conn = redis.Redis.from_url(stack.env["REDIS_URL"])
    with client_for(stack, OTHER) as user, client_for(stack, ADMIN) as admin:
        trained = submit(user, TINY_DENOISER, wait=120).json()
        assert trained["status"] == "succeeded", trained
        (weights,) = conn.scan_iter("dj:blob:models/*/admin-retry/*/diffusion_pytorch_model.safetensors")
        good = conn.hget(weights, "data")
        conn.hset(weights, "data", b"\x00not a safetensors file" * 100)  # the stored checkpoint goes bad

        denoise = {"kind": "denoise", "model": "admin-retry", "method": "one_step", "image": {"dataset": "mnist-5k"}}
        first, second = (submit(user, {**denoise, "image": {"dataset": "mnist-5k", "index": i}}) for i in (1, 2))
        failed = [finish(user, r.json()["id"], 60) for r in (first, second)]
        assert [j["status"] for j in failed] == ["failed", "failed"], failed
        assert failed[0]["error"]["type"] == "model_unreadable"
        assert queue_of(stack, "mnist")["failed"] == 2

        not_failed = admin.post(f"/v1/admin/jobs/{trained['id']}/retry")
        assert not_failed.status_code == 409
        assert "only a failed or timed_out job" in not_failed.json()["error"]["message"]

        conn.hset(weights, "data", good)  # the operator fixed the cause
        retried = admin.post(f"/v1/admin/jobs/{failed[0]['id']}/retry")
        assert retried.status_code == 200, retried.text
        assert retried.json()["status"] == "queued" and retried.json()["error"] is None
        again = finish(user, failed[0]["id"], 60)
        assert again["status"] == "succeeded", again
        assert again["attempts"] == 2 and again["error"] is None and again["artifacts"]

        unknown = admin.post("/v1/admin/queues/mnist/requeue-failed", json={"ids": ["not-failed-here"]})
        assert unknown.status_code == 409 and "not-failed-here" in unknown.json()["error"]["message"]
        assert job_of(user, failed[1]["id"])["status"] == "failed"  # nothing was requeued
        requeued = admin.post("/v1/admin/queues/mnist/requeue-failed")
        assert requeued.status_code == 200, requeued.text
        assert requeued.json() == {"queue": "mnist", "count": 1, "ids": [failed[1]["id"]]}
        assert finish(user, failed[1]["id"], 60)["status"] == "succeeded"
        assert queue_of(stack, "mnist")["failed"] == 0


def test_the_dashboard_serves_rq_dashboard_on_the_same_redis(stack, tmp_path):
    a_worker(stack)
    with client_for(stack, USER) as user:
        assert submit(user, NOISE).json()["status"] == "succeeded"
    port = free_port()
    log = open(tmp_path / "dashboard.log", "wb")  # noqa: SIM115 (the child owns it)
    proc = subprocess.Popen(cli("dashboard", "--port", str(port)), env=stack.env, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        page = wait_until(lambda: _get(url + "/"), 60, "the dashboard to answer")
        assert page.status_code == 200 and "<title>RQ dashboard</title>" in page.text
        queues = httpx.get(url + "/0/data/queues.json").json()["queues"]
        assert "mnist" in {q["name"] for q in queues}
        workers = httpx.get(url + "/0/data/workers.json").json()["workers"]
        listed = {w["name"] for w in admin_get(stack, "/v1/admin/workers")["workers"]}
        assert listed and listed <= {w["name"] for w in workers}
        jobs = httpx.get(url + "/0/data/jobs/mnist/finished/8/asc/1.json")
        assert jobs.status_code == 200 and jobs.json()["jobs"]  # the service's JSON jobs read back
    finally:
        stop(proc)
        log.close()


def _get(url: str) -> httpx.Response | None:
    try:
        return httpx.get(url, timeout=2)
    except httpx.HTTPError:
        return None
