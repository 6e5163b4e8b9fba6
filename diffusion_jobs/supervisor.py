"""`diffusion-jobs up`: the embedded Redis (unless REDIS_URL is set), the API and a worker per queue (`train` too),
as children; with WORKER_GPUS, a worker per queue and GPU, each seeing only its own GPU (CUDA_VISIBLE_DEVICES).

A child that dies is started again (with backoff). Ctrl-C or SIGTERM stops the API and the workers first (a worker
finishes its job in hand, up to a grace period), then Redis, so its append-only file is complete; nothing is left
behind, even if this process itself is killed (each child gets SIGTERM when its parent dies).
"""

import ctypes
import logging
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field

from core.catalog import builtin_models
from core.settings import Settings
from diffusion_jobs.redis_server import free_port, redis_argv, wait_ready

log = logging.getLogger("diffusion_jobs.up")
PR_SET_PDEATHSIG = 1
GRACE_S = 20.0


def _die_with_parent() -> None:
    ctypes.CDLL("libc.so.6", use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


@dataclass
class Child:
    name: str
    argv: list[str]
    proc: subprocess.Popen[bytes] | None = None
    restarts: int = 0
    started_at: float = field(default=0.0)
    env: dict[str, str] = field(default_factory=dict)  # the child's own settings, over the shared environment

    def start(self, env: dict[str, str]) -> None:
        self.proc = subprocess.Popen(
            self.argv, env={**env, **self.env}, start_new_session=True, preexec_fn=_die_with_parent
        )
        self.started_at = time.monotonic()
        log.info("started %s (pid %d)", self.name, self.proc.pid)

    def stop(self, timeout_s: float) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout_s)
        except subprocess.TimeoutExpired:
            log.warning("%s did not stop in %.0f s; killing it", self.name, timeout_s)
            self.proc.kill()
            self.proc.wait()


def queues_to_serve(settings: Settings) -> list[str]:
    """The queue of every shipped model that can run something here (DeepFloyd IF once configured), and `train`
    (training needs no checkpoint)."""
    return sorted({spec.queue for spec in builtin_models(settings).values() if spec.capabilities} | {"train"})


@dataclass(frozen=True)
class WorkerSlot:
    """One worker process of `up`: its queue, and the GPU it alone sees (None: whatever the environment gives)."""

    name: str
    queue: str
    gpu: str | None = None


def worker_layout(queues: list[str], gpus: list[str]) -> list[WorkerSlot]:
    """One worker per queue, or with GPUs one per queue and GPU ("worker-mnist-gpu0", ...), training included: a
    training job takes one GPU as a sampling job does (docs/operations/scaling.md, "One worker per GPU")."""
    if not gpus:
        return [WorkerSlot(f"worker-{queue}", queue) for queue in queues]
    return [WorkerSlot(f"worker-{queue}-gpu{gpu}", queue, gpu) for queue in queues for gpu in gpus]


def listed_gpus() -> list[str]:
    """The indices of the machine's GPUs as `nvidia-smi -L` lists them (none without it; torch is not imported
    here)."""
    smi = shutil.which("nvidia-smi")
    if smi is None:
        return []
    try:
        out = subprocess.run([smi, "-L"], capture_output=True, text=True, timeout=30, check=True).stdout
    except (subprocess.SubprocessError, OSError) as exc:
        log.warning("nvidia-smi -L failed (%s)", exc)
        return []
    return re.findall(r"^GPU (\d+):", out, flags=re.MULTILINE)


def worker_gpus(setting: str) -> list[str]:
    """WORKER_GPUS as a list of GPUs: "" none, "all" every GPU found, else the comma-separated ids as given."""
    if setting.strip().lower() == "all":
        found = listed_gpus()
        if not found:
            log.info("WORKER_GPUS=all but no GPU found (nvidia-smi -L): one worker per queue")
        return found
    return list(dict.fromkeys(gpu.strip() for gpu in setting.split(",") if gpu.strip()))


def worker_children(settings: Settings) -> list[Child]:
    return [
        Child(slot.name, cli_argv("worker", "--queue", slot.queue), env=_visible(slot.gpu))
        for slot in worker_layout(queues_to_serve(settings), worker_gpus(settings.worker_gpus))
    ]


def _visible(gpu: str | None) -> dict[str, str]:
    return {} if gpu is None else {"CUDA_VISIBLE_DEVICES": gpu}


def cli_argv(*args: str) -> list[str]:
    return [sys.executable, "-m", "diffusion_jobs.cli", *args]


def up(settings: Settings) -> int:
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    env = dict(os.environ)
    redis_child: Child | None = None
    if not settings.redis_url:
        port = free_port()
        env["REDIS_URL"] = f"redis://127.0.0.1:{port}/0"
        redis_child = Child("redis", redis_argv(settings.var_dir / "redis", port))
        redis_child.start(env)
        wait_ready(env["REDIS_URL"])
        log.info("embedded redis at %s, data in %s", env["REDIS_URL"], settings.var_dir / "redis")
    services = [Child("api", cli_argv("api")), *worker_children(settings)]
    for child in services:
        child.start(env)
    log.info("serving on http://%s:%d (Ctrl-C stops everything)", settings.host, settings.port)
    try:
        while not stop.wait(0.5):
            for child in ([redis_child] if redis_child else []) + services:
                if child.proc is not None and child.proc.poll() is not None:
                    log.warning("%s exited with %s; starting it again", child.name, child.proc.returncode)
                    backoff = min(2.0**child.restarts, 30.0) if time.monotonic() - child.started_at < 30 else 0
                    child.restarts += 1
                    if stop.wait(backoff):
                        break
                    child.start(env)
    finally:
        log.info("stopping")
        for child in services:
            if child.proc is not None and child.proc.poll() is None:
                child.proc.send_signal(signal.SIGTERM)
        for child in services:
            child.stop(GRACE_S)
        if redis_child is not None:
            redis_child.stop(10.0)
    return 0
