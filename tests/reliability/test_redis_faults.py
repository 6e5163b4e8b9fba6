"""Redis faults 5, 6 and 8 of docs/operations/reliability.md, each on a Redis server of its own that the test kills,
freezes or fills for real, under a real API and real worker processes."""

import itertools
import re
import signal
import threading
import time
from collections import Counter

import httpx
import numpy as np
import redis

from tests.helpers import (
    NOISE,
    SLOW_SAMPLE,
    TERMINAL,
    TEST_KEYS,
    Stack,
    client_for,
    job_of,
    own_redis,
    png,
    running_stack,
    wait_until,
)


def statuses(client: httpx.Client, ids: list[str]) -> dict[str, str]:
    return {i: job_of(client, i)["status"] for i in ids}


def all_end(client: httpx.Client, ids: list[str], timeout: float) -> dict[str, str]:
    def ended() -> dict[str, str] | None:
        now = statuses(client, ids)
        return now if set(now.values()) <= TERMINAL else None

    found: dict[str, str] = wait_until(ended, timeout, f"{len(ids)} jobs to end", every=0.5)
    return found


def completions(stack: Stack) -> Counter[str]:
    """How many times each job ran to completion, from every worker's log."""
    found: Counter[str] = Counter()
    for log in stack.log_dir.glob("worker-*.log"):
        found.update(re.findall(r"job=(\S+) succeeded", log.read_text()))
    return found


def test_redis_killed_and_restarted_from_its_append_only_file_keeps_every_accepted_job(tmp_path, measured):
    with (
        own_redis(tmp_path) as server,
        running_stack(server.url, tmp_path, fresh=False) as stack,
        client_for(stack, TEST_KEYS[-40]) as c,
    ):
        accepted = [c.post("/v1/jobs", json=SLOW_SAMPLE)]
        accepted += [c.post("/v1/jobs", json={**NOISE, "seed": i}) for i in range(20)]
        assert [r.status_code for r in accepted] == [202] * 21
        server.signal(signal.SIGKILL)  # at once: written to the kernel before each 202, kept by a process crash

        started = time.monotonic()
        down = c.post("/v1/jobs", json=NOISE, timeout=30)
        assert down.status_code == 503 and down.headers["Retry-After"], down.text
        assert down.json()["error"]["type"] == "unavailable"
        answered_503_s = time.monotonic() - started
        assert answered_503_s < 10
        time.sleep(3)
        assert stack.workers[0].poll() is None, "the worker died with Redis"

        server.start()
        restarted = time.monotonic()
        ids = [r.json()["id"] for r in accepted]
        assert set(all_end(c, ids, 120).values()) == {"succeeded"}
        assert stack.workers[0].poll() is None  # the same worker process, reconnected by itself
        assert set(completions(stack)) >= set(ids[1:])
        measured(
            accepted_before_kill=len(ids),
            succeeded=len(ids),
            post_while_down_answered_503_in_s=round(answered_503_s, 2),
            all_done_after_restart_s=round(time.monotonic() - restarted, 1),
        )


def test_redis_frozen_for_20_s_mid_load_loses_nothing_and_runs_nothing_twice(tmp_path, measured):
    with (
        own_redis(tmp_path) as server,
        running_stack(server.url, tmp_path, workers=2, fresh=False) as stack,
        client_for(stack, TEST_KEYS[-41]) as c,
    ):
        accepted: list[str] = []
        answers: Counter[int] = Counter()
        slowest = 0.0
        frozen = threading.Event()
        done = threading.Event()

        def load() -> None:
            nonlocal slowest
            with client_for(stack, TEST_KEYS[-41]) as submitter:
                for i in itertools.count():
                    if done.is_set():
                        return
                    body = SLOW_SAMPLE | {"n": 2, "seed": i} if i % 5 == 0 else {**NOISE, "seed": i}
                    began = time.monotonic()
                    try:
                        r = submitter.post("/v1/jobs", json=body, timeout=30)
                    except httpx.HTTPError:
                        answers[0] += 1
                        continue
                    if frozen.is_set():
                        slowest = max(slowest, time.monotonic() - began)
                    answers[r.status_code] += 1
                    if r.status_code == 202:
                        accepted.append(r.json()["id"])
                    time.sleep(0.05)

        loader = threading.Thread(target=load)
        loader.start()
        wait_until(lambda: len(accepted) >= 20, 60, "20 accepted jobs")
        server.signal(signal.SIGSTOP)
        frozen.set()
        time.sleep(20)
        frozen.clear()
        server.signal(signal.SIGCONT)
        wait_until(lambda: answers[202] >= len(accepted) and len(accepted) >= 40, 60, "submissions to resume")
        done.set()
        loader.join()

        assert answers[503] >= 1 and answers[500] == 0 and answers[0] == 0, answers
        assert slowest < 10, f"a POST took {slowest:.1f} s while Redis was frozen"
        assert set(all_end(c, accepted, 180).values()) == {"succeeded"}
        assert all(stack.workers[i].poll() is None for i in range(2))
        runs = completions(stack)
        assert {job_id: n for job_id, n in runs.items() if n > 1} == {}  # no job ran twice to completion
        assert set(runs) >= set(accepted)
        measured(
            accepted=len(accepted),
            answered_503=answers[503],
            answered_500=answers[500],
            slowest_post_while_frozen_s=round(slowest, 2),
            run_twice=0,
        )


def test_redis_out_of_memory_refuses_submissions_with_503_and_evicts_nothing(tmp_path, measured):
    with (
        own_redis(tmp_path, maxmemory="8mb") as server,
        running_stack(server.url, tmp_path, workers=0, fresh=False) as stack,
        client_for(stack, TEST_KEYS[-42]) as c,
    ):
        rng = np.random.default_rng(0)
        accepted: list[str] = []
        uploads: list[str] = []
        refused = None
        for i in range(200):
            pixels = rng.integers(0, 255, (256, 256), dtype=np.uint8)
            up = c.post("/v1/uploads", content=png(pixels), headers={"Content-Type": "image/png"})
            job = c.post("/v1/jobs", json={**NOISE, "seed": i})
            if up.status_code == 201:
                uploads.append(up.json()["id"])
            if job.status_code == 202:
                accepted.append(job.json()["id"])
            else:
                refused = job
                break
            assert up.status_code in (201, 503), up.text
        assert refused is not None, "Redis never filled up"
        assert refused.status_code == 503, refused.text
        assert refused.headers["Retry-After"]
        assert refused.json()["error"]["type"] == "unavailable"
        assert "full" in refused.json()["error"]["message"]
        assert len(accepted) >= 5

        assert set(statuses(c, accepted).values()) == {"queued"}  # every accepted job is still there, readable
        assert c.get("/v1/jobs", params={"limit": 100}).status_code == 200

        redis.Redis.from_url(server.url).config_set("maxmemory", "0")  # the operator adds memory
        stack.start_worker()
        assert set(all_end(c, accepted, 120).values()) == {"succeeded"}
        measured(
            accepted_before_full=len(accepted), uploads_before_full=len(uploads), evicted=0, succeeded=len(accepted)
        )
