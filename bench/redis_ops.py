"""Redis operations per job, counted by the Redis server itself (INFO commandstats), for the scale estimate of
BENCHMARKS.md ("Scale, on paper").

    .venv/bin/python bench/redis_ops.py [--jobs 50] [--samples 5] [--steps 300]

Starts `diffusion-jobs up` as bench/queue.py does (embedded Redis, the API, its workers) and runs, one at a time:
1. `--jobs` `noise` jobs with `Prefer: wait=10` (the smallest job: one image, no loop);
2. `--samples` `sample` jobs of one image on mnist-ddpm over `--steps` steps, also waited for;
3. `--jobs` polls `GET /v1/jobs/{id}` of a finished job.
Each phase's commands are the server's counters after it minus before it, divided by the phase's jobs (or polls),
so they include everything every process did meanwhile: the API, the worker, and the idle workers' heartbeats.
The difference between phases 2 and 1, over the steps, is what one sampling step costs Redis.
"""

import os
import sys

# Run as a script, this file's folder comes first on sys.path, where bench/queue.py would shadow the standard
# library's `queue`; put the repository root there instead (bench/ is then a namespace package).
if sys.path and os.path.abspath(sys.path[0] or ".") == os.path.dirname(os.path.abspath(__file__)):
    sys.path[0] = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

import argparse
import re
import time
from collections import Counter
from collections.abc import Callable

import httpx
import redis

from bench.queue import Stack, note, running_stack

NOISE = {"kind": "noise", "model": "mnist-ddpm", "image": {"dataset": "mnist-5k", "index": 3}, "timesteps": [100]}
REDIS_LINE = re.compile(r"embedded redis at (redis://\S+),")


def redis_url(stack: Stack) -> str:
    match = REDIS_LINE.search(stack.log_path.read_text(errors="replace"))
    if match is None:
        raise RuntimeError("the stack's log names no embedded Redis")
    return match.group(1)


def commands(conn: redis.Redis) -> Counter[str]:
    """Calls per command since the server started."""
    stats = conn.info("commandstats")
    return Counter({name.removeprefix("cmdstat_"): int(value["calls"]) for name, value in stats.items()})


def per_item(conn: redis.Redis, items: int, run: Callable[[], None]) -> Counter[str]:
    """The server's calls per command while `run` ran, per item (x1000 to keep three decimals in a Counter)."""
    before = commands(conn)
    run()
    after = commands(conn)
    return Counter({name: round(1000 * (after[name] - before[name]) / items) for name in after})


def waited(client: httpx.Client, body: dict[str, object]) -> str:
    response = client.post("/v1/jobs", json=body, headers={"Prefer": "wait=60"})
    job = response.json()
    if response.status_code != 200 or job.get("status") != "succeeded":
        raise RuntimeError(f"job did not succeed: {response.status_code} {response.text[:300]}")
    return str(job["id"])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--jobs", type=int, default=50)
    parser.add_argument("--samples", type=int, default=5)
    parser.add_argument("--steps", type=int, default=300)
    args = parser.parse_args()
    sample = {"kind": "sample", "model": "mnist-ddpm", "n": 1, "prompt": "3", "steps": args.steps}
    with running_stack(keep_var=False) as stack, httpx.Client(base_url=stack.base_url, timeout=90) as client:
        conn = redis.Redis.from_url(redis_url(stack))
        last = waited(client, {**NOISE, "seed": 0})  # warm-up
        waited(client, {**sample, "steps": 5, "seed": 0})
        noise = per_item(conn, args.jobs, lambda: [waited(client, {**NOISE, "seed": s}) for s in range(args.jobs)])
        started = time.monotonic()
        sampled = per_item(
            conn, args.samples, lambda: [waited(client, {**sample, "seed": s}) for s in range(args.samples)]
        )
        sample_s = (time.monotonic() - started) / args.samples
        polls = per_item(conn, args.jobs, lambda: [client.get(f"/v1/jobs/{last}") for _ in range(args.jobs)])
        note(f"{args.samples} sample jobs of {args.steps} steps: {sample_s:.1f} s each")
    names = sorted(set(noise) | set(sampled) | set(polls), key=lambda n: -(sampled[n] + noise[n] + polls[n]))
    print(f"Redis calls per job, counted by the server (noise: {args.jobs} jobs; sample: {args.samples} jobs of")
    print(f"{args.steps} steps, {sample_s:.1f} s each; poll: {args.jobs} GET /v1/jobs/{{id}} of a finished job)")
    print(f"{'command':<16} {'noise job':>10} {'sample job':>11} {'per step':>9} {'poll':>7}")
    for name in [n for n in names if noise[n] or sampled[n] or polls[n]]:
        step = (sampled[name] - noise[name]) / args.steps
        figures = (
            f"{noise[name] / 1000:10.2f} {sampled[name] / 1000:11.2f} {step / 1000:9.3f} {polls[name] / 1000:7.2f}"
        )
        print(f"{name:<16} {figures}")
    total = {k: sum(c.values()) / 1000 for k, c in (("noise", noise), ("sample", sampled), ("poll", polls))}
    per_step = (total["sample"] - total["noise"]) / args.steps
    print(f"{'all':<16} {total['noise']:10.2f} {total['sample']:11.2f} {per_step:9.3f} {total['poll']:7.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
