"""One worker per GPU (docs/operations/scaling.md, "One worker per GPU"): the layout `up` derives from WORKER_GPUS,
and the processes the real `diffusion-jobs up` starts with it, read from /proc."""

import os
import shutil
import signal
import stat
import subprocess
from pathlib import Path

import httpx
import pytest

from diffusion_jobs.redis_server import free_port
from diffusion_jobs.supervisor import WorkerSlot, worker_gpus, worker_layout
from tests.helpers import cli, stop, wait_until

SMI_OUTPUT = """GPU 0: NVIDIA H100 80GB HBM3 (UUID: GPU-0e3a3c1f-0000-0000-0000-000000000000)
GPU 1: NVIDIA H100 80GB HBM3 (UUID: GPU-0e3a3c1f-0000-0000-0000-000000000001)
  MIG 1g.10gb     Device  0: (UUID: MIG-5c1a2b3c-0000-0000-0000-000000000000)
GPU 2: NVIDIA H100 80GB HBM3 (UUID: GPU-0e3a3c1f-0000-0000-0000-000000000002)
"""


def test_the_layout_is_one_worker_per_queue_and_gpu_or_per_queue_without_gpus():
    assert worker_layout(["mnist", "train"], ["0", "1"]) == [
        WorkerSlot("worker-mnist-gpu0", "mnist", "0"),
        WorkerSlot("worker-mnist-gpu1", "mnist", "1"),
        WorkerSlot("worker-train-gpu0", "train", "0"),
        WorkerSlot("worker-train-gpu1", "train", "1"),
    ]
    assert worker_layout(["mnist", "train"], []) == [
        WorkerSlot("worker-mnist", "mnist"),
        WorkerSlot("worker-train", "train"),
    ]


def test_worker_gpus_reads_a_list_or_finds_every_gpu_nvidia_smi_lists(tmp_path, monkeypatch):
    assert worker_gpus("") == []
    assert worker_gpus(" 0, 1,1 ,3") == ["0", "1", "3"]
    cat = shutil.which("cat")
    monkeypatch.setenv("PATH", str(tmp_path))  # no nvidia-smi at all: no GPU, one worker per queue
    assert worker_gpus("all") == []
    smi = tmp_path / "nvidia-smi"
    smi.write_text(f"#!/bin/sh\n[ \"$1\" = -L ] && {cat} <<'EOF'\n{SMI_OUTPUT}EOF\n")
    smi.chmod(smi.stat().st_mode | stat.S_IXUSR)
    assert worker_gpus("all") == ["0", "1", "2"]  # GPUs, not their MIG slices
    assert worker_gpus("ALL") == ["0", "1", "2"]


def children(pid: int) -> dict[int, tuple[str, dict[str, str]]]:
    """The live children of `pid` that run a program of their own: command line and environment, from /proc."""
    found = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            if int(fields[1]) != pid or fields[0] == "Z":
                continue
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
            environ = (entry / "environ").read_bytes().split(b"\0")
        except (FileNotFoundError, ProcessLookupError, PermissionError, IndexError):
            continue
        env = dict(item.decode().split("=", 1) for item in environ if b"=" in item)
        found[int(entry.name)] = (cmdline, env)
    return found


def workers_of(up: subprocess.Popen[bytes], count: int) -> dict[int, tuple[str, dict[str, str]]]:
    """The worker processes of `up` once `count` of them have started their own program (not a fork of `up`)."""

    def started() -> dict[int, tuple[str, dict[str, str]]] | None:
        found = {pid: (c, env) for pid, (c, env) in children(up.pid).items() if " worker --queue " in c}
        return found if len(found) == count else None

    workers: dict[int, tuple[str, dict[str, str]]] = wait_until(started, 60, f"{count} workers", every=0.2)
    return workers


def start_up(tmp_path: Path, **settings: str) -> tuple[subprocess.Popen[bytes], str]:
    """`up` on a var dir and port of its own, without keys (the loopback user is the admin); and its URL."""
    port = free_port()
    env = {k: v for k, v in os.environ.items() if k not in ("REDIS_URL", "API_KEYS", "CUDA_VISIBLE_DEVICES")}
    env.update({"VAR_DIR": str(tmp_path / "var"), "PORT": str(port), **settings})
    log = open(tmp_path / "up.log", "ab")  # noqa: SIM115 (the child owns it)
    return subprocess.Popen(cli("up"), env=env, stdout=log, stderr=subprocess.STDOUT), f"http://127.0.0.1:{port}"


def registered(url: str, count: int) -> dict[int, str] | None:
    """pid -> CUDA_VISIBLE_DEVICES of each worker registered in Redis, as GET /v1/admin/workers reports them, once
    `count` have reported."""
    try:
        workers = httpx.get(url + "/v1/admin/workers", timeout=5).json()["workers"]
    except (httpx.HTTPError, ValueError, KeyError):
        return None
    reported = {w["pid"]: w["cuda_visible_devices"] for w in workers if w["cuda_visible_devices"] is not None}
    return reported if len(reported) == count else None


def queue_of(cmdline: str) -> str:
    return cmdline.split(" worker --queue ", 1)[1].split()[0]


@pytest.mark.slow
def test_up_starts_one_worker_per_queue_and_gpu_each_seeing_its_own_gpu(tmp_path):
    up, url = start_up(tmp_path, WORKER_GPUS="0,1")
    try:
        workers = workers_of(up, 4)
        layout = sorted((queue_of(c), env.get("CUDA_VISIBLE_DEVICES")) for c, env in workers.values())
        assert layout == [("mnist", "0"), ("mnist", "1"), ("train", "0"), ("train", "1")]
        # and they run (torch sees no CUDA here): each registered, reporting the GPU it was given
        reported = wait_until(lambda: registered(url, 4), 180, "4 workers to register", every=1)
        assert reported == {pid: env["CUDA_VISIBLE_DEVICES"] for pid, (_, env) in workers.items()}
        pids = list(children(up.pid))
    finally:
        up.send_signal(signal.SIGTERM)
        assert up.wait(60) == 0
    assert not [pid for pid in pids if Path(f"/proc/{pid}").exists()], "up left workers behind"


@pytest.mark.slow
def test_up_without_worker_gpus_starts_one_worker_per_queue_and_sets_no_gpu(tmp_path):
    up, _ = start_up(tmp_path)
    try:
        workers = workers_of(up, 2).values()
        assert sorted(queue_of(c) for c, _ in workers) == ["mnist", "train"]
        assert all("CUDA_VISIBLE_DEVICES" not in env for _, env in workers)
    finally:
        stop(up, timeout=60)
