"""Job groups end to end (docs/api.md, "Groups"): real Redis, the real API and worker processes, a real webhook
receiver, the Python client and the CLI as a subprocess; and a Redis frozen while groups are enqueued."""

import json
import os
import signal
import subprocess
import threading
import time
from collections import Counter
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import redis

from core import keys
from diffusion_jobs.client import Client
from diffusion_jobs.client_errors import NotFound, ValidationError
from tests.e2e.test_webhooks import Receiver, verifies
from tests.helpers import (
    NOISE,
    TEST_KEYS,
    RedisServer,
    Stack,
    cli,
    client_for,
    job_of,
    own_redis,
    running_stack,
    wait_until,
)

SECRET = "test-group-secret"
ENV = {"WEBHOOK_SECRET": SECRET, "WEBHOOK_BACKOFF_S": "0.25", "WEBHOOK_TIMEOUT_S": "5"}
SAMPLE = {"kind": "sample", "model": "mnist-flow", "prompt": "3", "n": 1, "steps": 4}
STATUSES = {"queued", "running", "succeeded", "failed", "canceled", "timed_out"}


def noise(count: int) -> list[dict[str, Any]]:
    return [{**NOISE, "seed": i} for i in range(count)]


@pytest.fixture(scope="module")
def group_stack(redis_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    with running_stack(redis_url, tmp_path_factory.mktemp("groups"), **ENV) as stack:
        yield stack


@pytest.fixture(scope="module")
def idle_stack(redis_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """No worker: every job stays queued. No WEBHOOK_SECRET, and at most 5 jobs a group."""
    with running_stack(redis_url, tmp_path_factory.mktemp("idle-groups"), workers=0, MAX_GROUP_JOBS="5") as stack:
        yield stack


@pytest.fixture
def client(group_stack: Stack, api_key: str) -> Iterator[httpx.Client]:
    with client_for(group_stack, api_key) as c:
        yield c


def db(stack: Stack) -> redis.Redis:
    return redis.Redis.from_url(stack.env["REDIS_URL"])


def posted(client: httpx.Client, body: dict[str, Any], headers: dict[str, str] | None = None) -> dict[str, Any]:
    response = client.post("/v1/groups", json=body, headers=headers)
    assert response.status_code == 202, response.text
    group: dict[str, Any] = response.json()
    assert response.headers["Location"] == f"/v1/groups/{group['id']}"
    return group


def finished(client: httpx.Client, group_id: str, timeout: float = 120) -> dict[str, Any]:
    def done() -> dict[str, Any] | None:
        group: dict[str, Any] = client.get(f"/v1/groups/{group_id}").json()
        return group if group["done"] else None

    found: dict[str, Any] = wait_until(done, timeout, f"group {group_id} to end", every=0.2)
    return found


def refused(response: httpx.Response) -> dict[str, Any]:
    assert response.status_code == 422, response.text
    error: dict[str, Any] = response.json()["error"]
    assert error["type"] == "validation_error"
    return error


def test_a_group_is_queued_as_one_and_counted_until_every_job_succeeded(client):
    group = posted(client, {"jobs": [*noise(3), SAMPLE]})
    assert group["total"] == 4 and len(set(group["job_ids"])) == 4
    assert set(group["counts"]) == STATUSES and sum(group["counts"].values()) == 4
    assert group["webhook"] is None
    for job_id in group["job_ids"]:
        job = job_of(client, job_id)  # a real job of this key, that knows its group
        assert job["group_id"] == group["id"]
    assert [job_of(client, i)["kind"] for i in group["job_ids"]] == ["noise"] * 3 + ["sample"]  # in the given order

    final = finished(client, group["id"])
    assert final["counts"] == {**dict.fromkeys(STATUSES, 0), "succeeded": 4}
    assert final["status"] == "completed" and final["expired"] == 0
    assert final["job_ids"] == group["job_ids"] and final["created_at"] == group["created_at"]
    listed = client.get("/v1/jobs").json()["jobs"]
    assert {j["id"] for j in listed} == set(group["job_ids"])


@pytest.mark.parametrize(
    ("jobs", "loc", "words"),
    [
        ([*noise(2), {**NOISE, "model": "no-such-model"}], ["body", "jobs", 2, "model"], "unknown model"),
        ([NOISE, {**NOISE, "color": "red"}], ["body", "jobs", 1, "noise", "color"], "Extra inputs"),
        ([{**SAMPLE, "steps": 0}, NOISE], ["body", "jobs", 0, "sample", "steps"], "greater than or equal to 1"),
        ([NOISE, {**SAMPLE, "prompt": "dog"}], ["body", "jobs", 1, "prompt"], "knows the prompts"),
        (
            [{"kind": "train", "name": "never-trained", "dataset": "mnist-5k", "objective": "flow", "epochs": 1}],
            ["body", "jobs", 0, "kind"],
            "one at a time",
        ),
        ([], ["body", "jobs"], "at least 1"),
    ],
)
def test_one_bad_job_refuses_the_whole_group_naming_its_index_and_nothing_is_queued(
    client, group_stack, jobs, loc, words
):
    conn = db(group_stack)
    before = (len(conn.keys("rq:job:*")), len(conn.keys("dj:group:*")), conn.llen("rq:queue:mnist"))
    error = refused(client.post("/v1/groups", json={"jobs": jobs}))
    assert loc in [d["loc"] for d in error["details"]], error
    assert words in error["message"] + json.dumps(error["details"]), error
    assert client.get("/v1/jobs").json()["jobs"] == []
    assert (len(conn.keys("rq:job:*")), len(conn.keys("dj:group:*")), conn.llen("rq:queue:mnist")) == before


def test_a_group_is_its_keys_alone(client, group_stack):
    group = posted(client, {"jobs": noise(2)})
    with client_for(group_stack, TEST_KEYS[-60]) as other:
        for method in ("GET", "DELETE"):
            response = other.request(method, f"/v1/groups/{group['id']}")
            assert response.status_code == 404, response.text
            assert response.json()["error"]["type"] == "not_found"
        assert other.get("/v1/jobs").json()["jobs"] == []
    assert client.get("/v1/groups/no-such-group").status_code == 404
    assert finished(client, group["id"])["counts"]["succeeded"] == 2  # the stranger's DELETE canceled nothing


def test_the_group_webhook_is_posted_once_signed_with_the_final_counts(client):
    with Receiver() as receiver:
        group = posted(client, {"jobs": noise(3), "webhook": receiver.url})
        assert group["webhook"] == receiver.url
        finished(client, group["id"])
        wait_until(lambda: receiver.calls, 15, "the group's POST")
        time.sleep(1.5)  # nothing more may follow
    [call] = receiver.calls
    assert call.event == "group.completed"
    assert verifies(SECRET, call.headers, call.body)
    body = json.loads(call.body)
    assert body["id"] == group["id"] and body["done"] and body["status"] == "completed"
    assert body["counts"]["succeeded"] == 3 and body["job_ids"] == group["job_ids"]


def test_a_group_may_not_ask_a_webhook_without_a_secret_nor_more_jobs_than_the_setting(idle_stack):
    with client_for(idle_stack, TEST_KEYS[-61]) as c:
        error = refused(c.post("/v1/groups", json={"jobs": noise(1), "webhook": "http://127.0.0.1:9/hook"}))
        assert ["body", "webhook"] in [d["loc"] for d in error["details"]] and "WEBHOOK_SECRET" in error["message"]
        error = refused(c.post("/v1/groups", json={"jobs": noise(6)}))
        assert ["body", "jobs"] in [d["loc"] for d in error["details"]] and "at most 5" in error["message"]
        assert c.get("/v1/jobs").json()["jobs"] == []


def test_delete_cancels_every_queued_job_of_the_group(idle_stack):
    conn = db(idle_stack)
    with client_for(idle_stack, TEST_KEYS[-62]) as c:
        group = posted(c, {"jobs": noise(3)})
        assert group["counts"]["queued"] == 3 and not group["done"] and group["status"] == "running"
        assert conn.llen("rq:queue:mnist") == 3

        response = c.delete(f"/v1/groups/{group['id']}")
        assert response.status_code == 202, response.text
        canceled = response.json()
        assert canceled["counts"] == {**dict.fromkeys(STATUSES, 0), "canceled": 3}
        assert canceled["done"] and canceled["status"] == "completed"
        assert [job_of(c, i)["status"] for i in group["job_ids"]] == ["canceled"] * 3
        assert conn.llen("rq:queue:mnist") == 0
        assert int(conn.hget(keys.group(group["id"]), "ended")) == 3  # each end counted once (core/endings.py)
        again = c.delete(f"/v1/groups/{group['id']}")
        assert again.status_code == 202 and again.json()["counts"] == canceled["counts"]
        assert int(conn.hget(keys.group(group["id"]), "ended")) == 3


def test_an_idempotency_key_makes_a_retried_group_once(idle_stack):
    conn = db(idle_stack)
    with client_for(idle_stack, TEST_KEYS[-63]) as c:
        body, key = {"jobs": noise(2)}, {"Idempotency-Key": "batch-2026-12-06"}
        first = posted(c, body, headers=key)
        again = c.post("/v1/groups", json=body, headers=key)  # a retry, e.g. after a 503 the group survived
        assert again.status_code == 202 and again.json()["id"] == first["id"]
        assert again.json()["job_ids"] == first["job_ids"]
        assert len(c.get("/v1/jobs").json()["jobs"]) == 2 and conn.llen("rq:queue:mnist") == 2  # one group
        other = c.post("/v1/groups", json={"jobs": noise(3)}, headers=key)
        assert other.status_code == 409 and "Idempotency-Key" in other.json()["error"]["message"]
        bad = {"jobs": [{**NOISE, "model": "nope"}]}
        refused(c.post("/v1/groups", json=bad, headers={"Idempotency-Key": "k2"}))
        fixed = posted(c, {"jobs": noise(1)}, headers={"Idempotency-Key": "k2"})  # a refused group left it free
        assert fixed["total"] == 1
        solo = c.post("/v1/jobs", json=NOISE, headers=key)  # a job's keys are apart from a group's
        assert solo.status_code == 202, solo.text
        c.delete(f"/v1/groups/{first['id']}")
        c.delete(f"/v1/groups/{fixed['id']}")
        c.delete(f"/v1/jobs/{solo.json()['id']}")


def test_the_python_client_submits_and_waits_for_a_group(group_stack, api_key):
    with Client(group_stack.url, api_key) as api:
        seen: list[int] = []
        group = api.submit_group(noise(3), idempotency_key="three")
        assert api.submit_group(noise(3), idempotency_key="three").id == group.id  # a retry: the same group
        final = api.wait_group(group, timeout=120, on_progress=lambda g: seen.append(g.counts["succeeded"]))
        assert final.done and final.counts["succeeded"] == 3 and final.job_ids == group.job_ids
        assert seen[-1] == 3 and seen == sorted(seen)
        assert api.get(final.job_ids[0]).group_id == group.id
        with pytest.raises(ValidationError) as bad:
            api.submit_group([NOISE, {**NOISE, "model": "nope"}])
        assert ["body", "jobs", 1, "model"] in [d["loc"] for d in bad.value.details]
        with pytest.raises(NotFound):
            api.get_group("no-such-group")


def test_the_cli_submits_a_jsonl_file_as_one_group_with_one_bar(group_stack, api_key, tmp_path):
    env = {**os.environ, "DIFFUSION_JOBS_URL": group_stack.url, "DIFFUSION_JOBS_KEY": api_key}
    jobs = tmp_path / "jobs.jsonl"
    jobs.write_text("\n".join(json.dumps(job) for job in noise(3)) + "\n\n")
    done = subprocess.run(cli("submit", "--many", str(jobs)), env=env, capture_output=True, text=True, timeout=180)
    assert done.returncode == 0, done.stderr
    group_id = done.stdout.split()[1].rstrip(":")
    assert done.stdout.strip() == f"group {group_id}: 3 succeeded"
    assert f"group {group_id} 3/3 |" in done.stderr, done.stderr  # the one bar, at its end

    queued = subprocess.run(
        cli("submit", "--many", "-", "--no-wait"), input=jobs.read_text(), env=env, capture_output=True, text=True
    )
    assert queued.returncode == 0, queued.stderr
    other_id = queued.stdout.strip()
    with Client(group_stack.url, api_key) as api:
        api.wait_group(other_id, timeout=120)
    shown = subprocess.run(cli("group", other_id), env=env, capture_output=True, text=True)
    assert shown.returncode == 0 and f"group {other_id} completed, 3/3 ended: 3 succeeded" in shown.stdout

    (tmp_path / "bad.jsonl").write_text(json.dumps(NOISE) + "\n" + json.dumps({**NOISE, "sigmas": [-1]}) + "\n")
    bad = subprocess.run(cli("submit", "--many", "bad.jsonl"), env=env, capture_output=True, text=True, cwd=tmp_path)
    assert bad.returncode == 2 and "jobs.1" in bad.stderr, bad.stderr
    (tmp_path / "junk.jsonl").write_text("{not json\n")
    junk = subprocess.run(cli("submit", "--many", "junk.jsonl"), env=env, capture_output=True, text=True, cwd=tmp_path)
    assert junk.returncode == 2 and "junk.jsonl:1" in junk.stderr


def group_ids(conn: redis.Redis) -> list[str]:
    return [key.decode().removeprefix("dj:group:") for key in conn.keys("dj:group:*")]


def whole_groups(conn: redis.Redis) -> tuple[int, int]:
    """Checks every group in Redis against every job: each group's jobs all there and queued, each job in a group
    that exists; returns (groups, jobs)."""
    members: dict[str, list[str]] = {g: json.loads(conn.hget(keys.group(g), "job_ids")) for g in group_ids(conn)}
    job_ids = {key.decode().removeprefix("rq:job:") for key in conn.keys("rq:job:*")}
    assert {j for ids in members.values() for j in ids} == job_ids, "a job without its group, or a group part-queued"
    assert conn.llen("rq:queue:mnist") == len(job_ids)
    return len(members), len(job_ids)


def freeze_at_multi(server: RedisServer, armed: threading.Event) -> threading.Thread:
    """A thread that freezes Redis (SIGSTOP) as soon as MONITOR shows a MULTI: an enqueue's transaction starting."""

    def watch() -> None:
        with redis.Redis.from_url(server.url).monitor() as monitor:
            armed.set()
            for command in monitor.listen():
                if command["command"].upper() == "MULTI":
                    server.signal(signal.SIGSTOP)
                    return

    thread = threading.Thread(target=watch, daemon=True)
    thread.start()
    return thread


def test_redis_frozen_during_a_group_enqueue_leaves_the_group_whole_or_absent(tmp_path):
    """Redis frozen (SIGSTOP) the moment a group's transaction starts, for longer than the API waits on it: the POST
    answers 503, and the group is then either wholly there (its transaction reached Redis whole and ran once Redis
    went on) or not at all; never in part. Five rounds, the invariant checked after each."""
    size, outcomes = 300, Counter[str]()
    with (
        own_redis(tmp_path) as server,
        running_stack(server.url, tmp_path, workers=0, fresh=False, REDIS_TIMEOUT_S="1") as stack,
        client_for(stack, TEST_KEYS[-63]) as c,
    ):
        conn = redis.Redis.from_url(server.url)
        body = {"jobs": noise(size)}
        for _ in range(5):
            before = whole_groups(conn)
            armed = threading.Event()
            watcher = freeze_at_multi(server, armed)
            armed.wait(5)
            response = c.post("/v1/groups", json=body, timeout=30)
            watcher.join(10)
            server.signal(signal.SIGCONT)
            after = whole_groups(conn)
            if response.status_code == 202:
                outcomes["answered 202"] += 1
                assert after == (before[0] + 1, before[1] + size)
            else:
                assert response.status_code == 503, response.text
                outcomes["503, group whole" if after != before else "503, nothing queued"] += 1
                assert after in (before, (before[0] + 1, before[1] + size))
        assert outcomes["answered 202"] < 5, outcomes  # the freeze hit at least one enqueue
        for group_id in group_ids(conn):  # each group there, answered or not, reads as whole through the API
            assert c.get(f"/v1/groups/{group_id}").json()["counts"]["queued"] == size
