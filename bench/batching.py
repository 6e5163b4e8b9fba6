"""Cross-job batching benchmark: a burst of small `sample` jobs, and a lone job, with batching on and off.

    .venv/bin/python bench/batching.py [--jobs 32] [--lone 5] [--model mnist-ddpm] [--steps N] [--curve 1,2,4,...]

It starts two `diffusion-jobs up` stacks as bench/queue.py does, one with BATCH_MAX_JOBS=32, one with 1, and runs:
1. lone: --lone `sample` jobs of n = 1 one after another, alternating between the stacks, client wall time each
   (after one warm-up job on each);
2. burst: on each stack in turn, --jobs `sample` jobs of n = 1 posted at once by as many clients (classes 0..9 in
   turn, each its own seed): the time from the first POST until every job has succeeded, and each job's latency.
Then, in this process, images per second of the same loop over a batch of B images for each B of --curve (the
network as the worker holds it, on INFERENCE_THREADS threads, or on CUDA when there is one): where throughput stops
growing, batching stops paying.
Prints the figures and the ratios (batched against alone, in the same run); targets are marked ok or MISSED.
"""

import os
import sys

# Run as a script, this file's folder comes first on sys.path, where bench/queue.py would shadow the standard
# library's `queue`; put the repository root there instead (bench/ is then a namespace package).
if sys.path and os.path.abspath(sys.path[0] or ".") == os.path.dirname(os.path.abspath(__file__)):
    sys.path[0] = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

import argparse
import contextlib
import statistics
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import httpx

from bench.queue import TERMINAL, load_average, note, running_stack

TARGET_SPEEDUP = 4.0  # the burst, batched against one job at a time
TARGET_LONE_RATIO = 1.10  # a lone job's p50, batching on against off


@dataclass
class Figures:
    lone_s: list[float]
    burst_s: float
    burst_latency_s: list[float]


def body(model: str, steps: int | None, index: int) -> dict[str, Any]:
    extra = {"steps": steps} if steps else {}
    return {"kind": "sample", "model": model, "n": 1, "class_label": index % 10, "seed": 1000 + index, **extra}


def run_one(client: httpx.Client, job: dict[str, Any]) -> float:
    """Posts the job and follows it to its end; the seconds from POST to success."""
    started = time.monotonic()
    response = client.post("/v1/jobs", json=job)
    if response.status_code != 202:
        raise RuntimeError(f"POST answered {response.status_code}: {response.text[:300]}")
    job_id = response.json()["id"]
    while True:
        view = client.get(f"/v1/jobs/{job_id}", params={"wait": 30}, timeout=60).json()
        if view["status"] in TERMINAL:
            break
    if view["status"] != "succeeded":
        raise RuntimeError(f"job {job_id} ended {view['status']}: {view.get('error')}")
    return time.monotonic() - started


def burst(client: httpx.Client, args: argparse.Namespace) -> tuple[float, list[float]]:
    """--jobs jobs posted at once; the seconds until all succeeded, and each one's latency."""
    started = time.monotonic()
    with ThreadPoolExecutor(args.jobs) as pool:
        latencies = list(pool.map(lambda i: run_one(client, body(args.model, args.steps, i)), range(args.jobs)))
    return time.monotonic() - started, latencies


def measure(args: argparse.Namespace) -> tuple[Figures, Figures]:
    """Two stacks side by side, batching on and off; lone jobs alternate between them (the machine's drift falls on
    both alike), then a burst on each."""
    with contextlib.ExitStack() as stacks:
        clients = []
        for max_jobs in (32, 1):
            os.environ["BATCH_MAX_JOBS"] = str(max_jobs)
            stack = stacks.enter_context(running_stack(keep_var=False))
            clients.append(stacks.enter_context(httpx.Client(base_url=stack.base_url, timeout=60)))
        for client in clients:
            run_one(client, body(args.model, args.steps, 0))  # each worker's first job: warm
        lone: list[list[float]] = [[], []]
        for i in range(args.lone):
            for k in (0, 1) if i % 2 == 0 else (1, 0):
                lone[k].append(run_one(clients[k], body(args.model, args.steps, i)))
        figures = []
        for k, client in enumerate(clients):
            seconds, latencies = burst(client, args)
            note(f"batching {'on' if k == 0 else 'off'}: lone p50 {p50(lone[k]):.2f} s, burst {seconds:.1f} s")
            figures.append(Figures(lone[k], seconds, latencies))
    return figures[0], figures[1]


def throughput_curve(model_id: str, steps: int, sizes: list[int]) -> list[tuple[int, float]]:
    """Images per second of `steps` CFG steps over B images, in this process, as the worker runs them."""
    import torch

    from bench.sampling import service_sample
    from core.settings import get_settings
    from worker.allocator import tune_malloc
    from worker.model_cache import ModelCache

    tune_malloc()
    settings = get_settings()
    if not torch.cuda.is_available():
        torch.set_num_threads(settings.inference_threads)  # as a sampling worker runs
    model = ModelCache(settings).load(model_id)
    times = model.process.times(steps, None)
    spec = model.spec
    shape = (spec.channels, spec.image_size, spec.image_size)
    rows = []
    for size in [sizes[0], *sizes]:  # the first size twice: its first run warms up
        began = time.perf_counter()
        service_sample(model.predict, model.process, times, torch.arange(size) % 10, 0, shape, device=model.device)
        if model.device.type == "cuda":
            torch.cuda.synchronize()
        rows.append((size, size / (time.perf_counter() - began)))
    return rows[1:]


def p50(values: list[float]) -> float:
    return statistics.median(values)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--jobs", type=int, default=32)
    parser.add_argument("--lone", type=int, default=5)
    parser.add_argument("--model", default="mnist-ddpm")
    parser.add_argument("--steps", type=int, default=None, help="sampling steps a job (default: the model's)")
    parser.add_argument("--curve", default="1,2,4,8,16,32,64", help="batch sizes for the in-process curve; '' none")
    parser.add_argument("--curve-steps", type=int, default=30)
    args = parser.parse_args()
    load_start = load_average()
    on, off = measure(args)
    curve = throughput_curve(args.model, args.curve_steps, [int(s) for s in args.curve.split(",") if s])
    speedup = off.burst_s / on.burst_s
    lone_ratio = p50(on.lone_s) / p50(off.lone_s)
    steps = args.steps or "the model's"
    print(f"\n{args.jobs} concurrent `sample` jobs of n = 1 on {args.model}, {steps} steps, CFG 5; one worker")
    print(f"load average {load_start} at the start, {load_average()} at the end\n")
    print("| figure | batching on (32) | off (1) | on / off | target |")
    print("|---|---|---|---|---|")
    verdict = "ok" if speedup >= TARGET_SPEEDUP else "MISSED"
    print(
        f"| burst: all {args.jobs} done | {on.burst_s:.1f} s | {off.burst_s:.1f} s | {speedup:.2f}x sooner | "
        f">= {TARGET_SPEEDUP:.0f}x: {verdict} |"
    )
    print(
        f"| burst: a job's p50 latency | {p50(on.burst_latency_s):.1f} s | {p50(off.burst_latency_s):.1f} s | "
        f"{p50(off.burst_latency_s) / p50(on.burst_latency_s):.2f}x sooner | |"
    )
    verdict = "ok" if lone_ratio <= TARGET_LONE_RATIO else "MISSED"
    print(
        f"| lone job p50 | {p50(on.lone_s):.2f} s | {p50(off.lone_s):.2f} s | {lone_ratio:.3f} | "
        f"<= {TARGET_LONE_RATIO:.2f}: {verdict} |"
    )
    if curve:
        print(f"\nIn-process, {args.curve_steps} steps of the same loop: images per second by batch size")
        print("| images a batch | images/s | vs 1 |")
        print("|---|---|---|")
        for size, rate in curve:
            print(f"| {size} | {rate:.2f} | {rate / curve[0][1]:.2f}x |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
