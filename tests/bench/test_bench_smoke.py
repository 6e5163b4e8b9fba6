"""Smoke tests of the benchmarks' parts: the spec's plain loop and the service's sampler give the same pixels for the
same seed (the "same pixels" claim of bench/sampling.py), and the quality benchmark's split and Frechet distance."""

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch

from bench.reference import ddpm_sample, flow_sample
from bench.sampling import class_labels, service_sample
from models.judge import frechet_distance, split
from models.predictors import unet_predictor
from models.processes import DDPM, Flow
from models.sampling import generators
from models.schedules import linear_schedule
from models.unet import CS180UNet, init_weights

SEED = 7


@pytest.fixture(autouse=True)
def one_thread() -> Iterator[None]:
    """Tiny tensors: with two threads on a busy two-core machine a pass takes a second instead of milliseconds."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def tiny_unet() -> CS180UNet:
    net = CS180UNet(hidden=8, time_conditioned=True, num_classes=10)
    init_weights(net, torch.Generator().manual_seed(0))
    return net.eval()


@pytest.mark.parametrize("kind", ["ddpm", "flow"])
def test_reference_and_service_give_the_same_pixels(kind: str) -> None:
    net, steps = tiny_unet(), 5
    cond = class_labels(4)
    if kind == "ddpm":
        process, ref = DDPM(linear_schedule(steps)), ddpm_sample(net, cond, generators(SEED, 4), 5.0, T=steps)
    else:
        process, ref = Flow(default_steps=steps), flow_sample(net, cond, generators(SEED, 4), 5.0, steps=steps)
    times = process.times()
    assert len(times) == steps + 1
    out = service_sample(unet_predictor(net), process, times, cond, SEED, (1, 28, 28), 5.0)
    assert out.shape == ref.shape == (4, 1, 28, 28)
    assert float(ref.std()) > 0.1  # a real image-sized signal, not all zeros
    assert torch.allclose(out, ref, atol=1e-4, rtol=0), float((out - ref).abs().max())
    other = service_sample(unet_predictor(net), process, times, cond, SEED + 1, (1, 28, 28), 5.0)
    assert not torch.allclose(other, ref, atol=1e-2)  # another seed: other pixels


def test_held_out_split_is_stratified_and_disjoint() -> None:
    from models.datasets import mnist_5k

    train, held = split()
    assert len(train) == 4500 and len(held) == 500 and not set(train) & set(held)
    assert np.bincount(mnist_5k().labels[held], minlength=10).tolist() == [50] * 10


def test_frechet_distance_known_answers() -> None:
    rng = np.random.default_rng(0)
    a = rng.normal(size=(2000, 4))
    assert frechet_distance(a, a) == pytest.approx(0.0, abs=1e-6)
    assert frechet_distance(a, a + 3.0) == pytest.approx(4 * 9.0, rel=1e-6)  # |mean shift|^2, same covariance
    expected = float(np.trace(np.cov(a, rowvar=False)) + (a.mean(0) ** 2).sum())  # Tr(S + 4S - 2 * 2S) + |mu|^2
    assert frechet_distance(a, 2 * a) == pytest.approx(expected, rel=1e-6)


def test_training_bench_runs_and_its_loops_agree(tmp_path: Path) -> None:
    from bench.training import main

    args = [
        "--hidden",
        "8",
        "--batch",
        "16",
        "--steps",
        "2",
        "--bf16-steps",
        "2",
        "--no-compile",
        "--objectives",
        "flow",
    ]
    assert main([*args, "--json", str(tmp_path / "training.json")]) == 0
    runs = json.loads((tmp_path / "training.json").read_text())["results"]["flow"]
    assert [r["fp32"] for r in runs] == [True, True, False]  # reference, train, train + bf16
    assert runs[1]["losses"] == pytest.approx(runs[0]["losses"], rel=1e-5)  # same weights, batches and noise


def run_bench(script: str, *args: str, timeout: float) -> str:
    """A bench script's output, run as `make bench` runs it (from the repository root)."""
    root = Path(__file__).resolve().parents[2]
    done = subprocess.run(
        [sys.executable, script, *args], capture_output=True, text=True, check=True, cwd=root, timeout=timeout
    )
    return done.stdout


def test_the_deepfloyd_benchmark_runs_on_the_tiny_if() -> None:
    out = run_bench("bench/deepfloyd.py", "--n", "1", "--rounds", "1", timeout=240)
    rows = [line for line in out.splitlines() if line.startswith("stage ")]
    assert [row.split()[:2] for row in rows] == [["stage", "I,"], ["stage", "II,"]]
    assert all(row.endswith("x") for row in rows)


def test_the_api_requests_benchmark_counts_one_pool_hop_per_request() -> None:
    """A route's dependencies that only read the app's state must not each take a trip to the thread pool."""
    out = run_bench("bench/api_requests.py", "--requests", "20", timeout=120)
    assert "POST /v1/jobs thread-pool hops: 1 (admit_and_create)" in out, out
    assert "GET /v1/jobs/{id} thread-pool hops: 1 " in out, out


def test_the_priorities_benchmark_runs_and_high_jumps_the_line() -> None:
    out = run_bench("bench/priorities.py", "--backlog", "12", "--probes", "1", timeout=300)
    rows = {line.split(" | ")[0].lstrip("| "): line.split(" | ") for line in out.splitlines() if line.startswith("| ")}
    high = float(rows["high, 12 low jobs queued"][1])
    behind = float(rows["normal, 20 normal jobs queued"][1])
    assert high < behind / 3, out  # a high job waits for the job in hand, a normal one for the whole line


def test_the_steps_benchmark_runs_every_sampler_it_is_asked_for() -> None:
    out = run_bench(
        "bench/steps.py",
        "--models",
        "mnist-flow",
        "--steps",
        "2",
        "--per-class",
        "1",
        "--samplers",
        "ab2,heun",
        timeout=300,
    )
    rows = [line.split() for line in out.splitlines() if line.startswith("mnist-flow")]
    assert [row[:4] for row in rows] == [
        ["mnist-flow", "(ref)", "euler", "50"],
        ["mnist-flow", "heun", "2", "4"],  # 2 steps, 2 network calls each
        ["mnist-flow", "ab2", "2", "2"],
    ], out
