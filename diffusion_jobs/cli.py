"""`diffusion-jobs`: `up` (everything on one machine), `api`, `worker`, `redis`, and `train` (a training run without
the service). Heavy imports happen per command, so the API's container needs no torch."""

import argparse
import ipaddress
import logging.config
import os
import sys

from core.logs import log_config
from core.queues import MNIST_QUEUE, QUEUES
from core.settings import get_settings


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def cmd_api(args: argparse.Namespace) -> int:
    import uvicorn

    settings = get_settings()
    if not settings.key_list and not is_loopback(settings.host):
        sys.stderr.write(
            f"refusing to listen on {settings.host} with no API_KEYS set; set API_KEYS or HOST=127.0.0.1\n"
        )
        return 2
    uvicorn.run(
        "service.app:create_app",
        factory=True,
        host=settings.host,
        port=settings.port,
        workers=settings.api_workers,
        log_level=settings.log_level.lower(),
        log_config=log_config(settings.log_format, settings.log_level),  # in each API process, uvicorn's lines too
        access_log=False,
    )
    return 0


def passive_omp() -> None:
    """OpenMP threads that spin while they wait make a step many times slower on shared, busy cores (measured: a
    tiny training step 0.08 s idle-waiting, up to 5 s spinning at load 7 on 2 cores); idle, PASSIVE costs nothing.
    Must run before torch is imported; OMP_WAIT_POLICY set in the environment wins."""
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")


def cmd_worker(args: argparse.Namespace) -> int:
    passive_omp()
    from worker.main import run_worker

    return run_worker(args.queue, get_settings(), burst=args.burst)


def cmd_redis(args: argparse.Namespace) -> int:
    from diffusion_jobs.redis_server import free_port, redis_argv

    settings = get_settings()
    port = args.port or free_port()
    sys.stdout.write(f"REDIS_URL=redis://127.0.0.1:{port}/0\n")
    sys.stdout.flush()
    argv = redis_argv(settings.var_dir / "redis", port)
    os.execv(argv[0], argv)


def cmd_up(args: argparse.Namespace) -> int:
    from diffusion_jobs.supervisor import up

    return up(get_settings())


def cmd_dashboard(args: argparse.Namespace) -> int:
    from diffusion_jobs.dashboard import run_dashboard

    return run_dashboard(get_settings(), args.host, args.port)


def cmd_train(args: argparse.Namespace) -> int:
    passive_omp()
    from diffusion_jobs.train_cli import run

    return run(args)


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="diffusion-jobs", description=__doc__)
    sub = p.add_subparsers(dest="command", required=True)
    sub.add_parser("up", help="embedded Redis (unless REDIS_URL), the API and its workers").set_defaults(func=cmd_up)
    sub.add_parser("api", help="the HTTP API (HOST, PORT)").set_defaults(func=cmd_api)
    w = sub.add_parser("worker", help="one worker process on one queue")
    w.add_argument("--queue", default=MNIST_QUEUE, choices=QUEUES)
    w.add_argument("--burst", action="store_true", help="exit when the queue is empty")
    w.set_defaults(func=cmd_worker)
    r = sub.add_parser("redis", help="the embedded Redis server alone, in the foreground")
    r.add_argument("--port", type=int, default=0)
    r.set_defaults(func=cmd_redis)
    d = sub.add_parser("dashboard", help="rq-dashboard, a web view of the queues and workers, on REDIS_URL")
    d.add_argument("--host", default="127.0.0.1", help="the address to listen on (default: loopback only)")
    d.add_argument("--port", type=int, default=9181)
    d.set_defaults(func=cmd_dashboard)
    from diffusion_jobs.train_cli import add_arguments

    t = sub.add_parser("train", help="train a model as a `train` job would, into a folder, without the service")
    add_arguments(t)
    t.set_defaults(func=cmd_train)
    from diffusion_jobs.client_cli import add_commands

    add_commands(sub)  # submit, jobs, cancel, models: a client of a running service
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    settings = get_settings()
    logging.config.dictConfig(log_config(settings.log_format, settings.log_level))
    result: int = args.func(args)
    return result


if __name__ == "__main__":
    sys.exit(main())
