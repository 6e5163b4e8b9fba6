"""`diffusion-jobs up` as a user runs it, and the stack living through a Redis restart."""

import os
import signal
import subprocess
import time
from pathlib import Path

import httpx
import pytest

from diffusion_jobs.redis_server import free_port, redis_argv, wait_ready
from tests.helpers import TEST_ENV, cli, running_stack, stop, wait_until

NOISE = {"kind": "noise", "model": "mnist-ddpm", "image": {"dataset": "mnist-5k", "index": 1}, "sigmas": [0.3]}


def children(pid: int) -> dict[int, str]:
    """The live child processes of `pid` and their command lines, from /proc."""
    found = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
                if int(stat.rsplit(")", 1)[1].split()[1]) == pid and stat.rsplit(")", 1)[1].split()[0] != "Z":
                    found[int(entry.name)] = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
            except (FileNotFoundError, ProcessLookupError, IndexError):
                continue
    return found


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return False
    return state != "Z"


def start_up(var_dir: Path, port: int) -> subprocess.Popen[bytes]:
    env = {k: v for k, v in os.environ.items() if k not in ("REDIS_URL", "API_KEYS")}
    env.update({"VAR_DIR": str(var_dir), "PORT": str(port), "HEARTBEAT_TTL_S": "6"})
    log = open(var_dir.parent / f"up-{port}.log", "ab")  # noqa: SIM115
    proc = subprocess.Popen(cli("up"), env=env, stdout=log, stderr=subprocess.STDOUT)
    wait_until(lambda: _ready(f"http://127.0.0.1:{port}"), 60, "`up` to be ready")
    return proc


def _ready(url: str) -> bool:
    try:
        return httpx.get(url + "/readyz", timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


@pytest.mark.slow
def test_up_serves_restarts_a_dead_worker_stops_cleanly_and_keeps_jobs(tmp_path):
    var_dir, port = tmp_path / "var", free_port()
    var_dir.mkdir()
    url = f"http://127.0.0.1:{port}"
    up = start_up(var_dir, port)
    try:
        job = httpx.post(url + "/v1/jobs", json=NOISE, headers={"Prefer": "wait=30"}, timeout=60).json()
        assert job["status"] == "succeeded"
        kids = children(up.pid)
        assert len(kids) == 4, kids  # redis, api, the mnist worker, the train worker
        assert any("redis-server" in c for c in kids.values())
        assert any(" worker --queue train" in c for c in kids.values())
        (worker_pid,) = [p for p, c in kids.items() if " worker --queue mnist" in c]
        os.kill(worker_pid, signal.SIGKILL)
        wait_until(
            lambda: any(" worker --queue mnist" in c and p != worker_pid for p, c in children(up.pid).items()),
            30,
            "a new worker",
        )
        again = httpx.post(url + "/v1/jobs", json=NOISE, headers={"Prefer": "wait=60"}, timeout=90).json()
        assert again["status"] == "succeeded"
        kids = children(up.pid)
    finally:
        up.send_signal(signal.SIGTERM)
        assert up.wait(40) == 0
    assert not [p for p in kids if alive(p)], "up left processes behind"
    assert (var_dir / "redis" / "appendonly.aof").exists()

    port = free_port()  # a new API port, and a new Redis port inside: the data is what carries over
    up = start_up(var_dir, port)
    try:
        seen = httpx.get(f"http://127.0.0.1:{port}/v1/jobs/{job['id']}").json()
        assert seen["status"] == "succeeded"
    finally:
        stop(up, timeout=40)


@pytest.mark.slow
def test_worker_and_api_live_through_a_redis_restart(tmp_path):
    port = free_port()
    data = tmp_path / "redis"
    redis_url = f"redis://127.0.0.1:{port}/0"
    server = subprocess.Popen(redis_argv(data, port), stdout=subprocess.DEVNULL)
    wait_ready(redis_url)
    try:
        with running_stack(redis_url, tmp_path, workers=1, fresh=False) as stack:
            headers = {"Authorization": f"Bearer {TEST_ENV['API_KEYS'].split(',')[-6]}", "Prefer": "wait=30"}
            before = httpx.post(stack.url + "/v1/jobs", json=NOISE, headers=headers, timeout=60).json()
            assert before["status"] == "succeeded"
            time.sleep(1.5)  # appendfsync everysec
            stop(server, signal.SIGKILL)
            down = httpx.post(stack.url + "/v1/jobs", json=NOISE, headers=headers, timeout=30)
            assert down.status_code == 503
            time.sleep(2)
            assert stack.workers[0].poll() is None, "the worker died with Redis"
            server = subprocess.Popen(redis_argv(data, port), stdout=subprocess.DEVNULL)
            wait_ready(redis_url)
            after = wait_until(
                lambda: (
                    (r := httpx.post(stack.url + "/v1/jobs", json=NOISE, headers=headers, timeout=60)).status_code
                    == 200
                    and r.json()
                ),
                60,
                "a job to run after the restart",
            )
            assert after["status"] == "succeeded"
            kept = httpx.get(f"{stack.url}/v1/jobs/{before['id']}", headers=headers).json()
            assert kept["status"] == "succeeded"  # from the append-only file
    finally:
        stop(server)
