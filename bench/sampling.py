"""Sampling benchmark: images per second of CFG sampling, the spec's plain loop against the service's sampler.

    .venv/bin/python bench/sampling.py [--batch 100] [--rounds 2] [--models mnist-ddpm,mnist-flow] [--json PATH]

For each model (DDPM at all T = 300 steps, flow matching at 50 steps; CFG gamma 5, classes 0..9 in turn, one seed):

- reference: bench/reference.py, the spec's algorithm B.4 (two forward passes of B per step, eager fp32, no_grad);
- service: `start` + `sample_loop` + `CFG` (each image once per step, under both conditions: the UNet's encoder runs
  once for both branches, models/unet.py) under torch.inference_mode over the network as the worker holds it
  (models/inference.py: BatchNorm folded into the convolutions, GELUs in place, channels-last, passes of CPU_CHUNK
  rows), as the worker runs a `sample` job (without the PNG encoding);
- the same with each image repeated per branch (2B images through the whole network), to show what sharing gives;
- the same sampler over the network as loaded (no rewrites), to show what the rewrites give;
- the service with the predictor under torch.compile (when a probe compiles and runs it within --compile-timeout
  seconds in a subprocess; skipped with a note otherwise);
- with --tuned-malloc, every variant (the reference too) runs with glibc's malloc tuned as a worker tunes it
  (worker/allocator.py); without, with glibc's defaults, under which the reference's 10 MB activations page-fault;
- the service's sampler under bfloat16 autocast: timed over the first --bf16-steps steps and extrapolated (bf16
  convolutions have no fast kernel on CPUs without AVX-512 BF16), its pixels checked over the whole run on the first
  --bf16-check-n samples against fp32.

The fp32 variants run interleaved, --rounds times (reversing the order every other round), and each one's fastest run
counts (timeit's rule: on a shared machine a slower run measures the other work, not the code; one run of the service
here took 49 s against 25 s for the next).
"Same pixels": the reference draws its noise from the same per-sample generators the service does, so for the same
seed the two must agree up to float rounding (batched against separate passes); the max abs difference is printed.
Prints a table (targets ok or MISSED; the exit status is 0 either way) and, with --json, writes the figures.
"""

import os
import sys

# Run as a script, this file's folder comes first on sys.path, where bench/queue.py would shadow the standard
# library's `queue`; put the repository root there instead (bench/ is then a namespace package).
if sys.path and os.path.abspath(sys.path[0] or ".") == os.path.dirname(os.path.abspath(__file__)):
    sys.path[0] = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

import argparse
import json
import platform
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import torch
from tqdm import tqdm

from bench.reference import ddpm_sample, flow_sample, image_shape
from models.guidance import CFG, Predict
from models.inference import CPU_CHUNK, chunked, compiled, for_inference
from models.predictors import branches, labels, unet_predictor
from models.processes import DDPM, Flow, NoiseProcess
from models.sampling import OnStep, generators, sample_loop, start
from models.schedules import make_schedule
from models.solvers import Native
from models.unet import CS180UNet
from worker.allocator import tune_malloc

ROOT = Path(__file__).resolve().parent.parent
CHECKPOINTS = ROOT / "models" / "checkpoints"
MODEL_OBJECTIVES = {"mnist-ddpm": "ddpm", "mnist-flow": "flow"}  # as core/catalog.py: DDPM T = 300, flow 50 steps
GUIDANCE = 5.0
TARGET_SPEEDUP = 2.0
SAME_PIXELS_ATOL = 1e-4


def make_process(kind: str, schedule: str = "linear") -> NoiseProcess:
    """The shipped models' processes: DDPM on T = 300 betas of `schedule`, flow matching at 50 steps."""
    return DDPM(make_schedule(schedule, 300, 1e-4, 0.02)) if kind == "ddpm" else Flow(default_steps=50)


def schedule_of(checkpoints: Path, model: str) -> str:
    """The beta schedule a checkpoint was trained on (its training.json; the spec's linear one without it)."""
    record = checkpoints / model / "training.json"
    return str(json.loads(record.read_text())["config"].get("schedule", "linear")) if record.exists() else "linear"


def load_unet(checkpoints: Path, model: str) -> CS180UNet:
    net: CS180UNet = CS180UNet.from_pretrained(checkpoints / model, low_cpu_mem_usage=False).eval()
    return net


def class_labels(n: int) -> torch.Tensor:
    """(n,) classes 0, 1, ..., 9, 0, 1, ..."""
    return torch.arange(n) % 10


def service_sample(
    predict: Predict,
    process: NoiseProcess,
    times: list[float],
    cond: torch.Tensor,
    seed: int,
    shape: tuple[int, int, int],
    scale: float = GUIDANCE,
    bf16: bool = False,
    on_step: OnStep | None = None,
    device: torch.device | str = "cpu",
) -> torch.Tensor:
    """The worker's `sample` job: CFG samples of the classes `cond` (B,), sample i seeded seed + i; float32 out."""
    n = len(cond)
    gens = generators(seed, n)
    guide = CFG(cond.to(device), labels(None, n, device), scale)
    with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
        x = start(process, times, 0, gens, torch.empty(n, *shape, device=device))
        out = sample_loop(Native(process, times), predict, guide, x, gens, on_step=on_step)
    return out.float().contiguous()


def reference_sample(net: CS180UNet, kind: str, cond: torch.Tensor, seed: int, scale: float = GUIDANCE) -> torch.Tensor:
    gens = generators(seed, len(cond))
    return (ddpm_sample if kind == "ddpm" else flow_sample)(net, cond, gens, scale)


# ---------------------------------------------------------------------------------------------------------------------
# Variants


@dataclass
class Variant:
    name: str
    run: Callable[[], torch.Tensor]
    seconds: list[float] = field(default_factory=list)
    output: torch.Tensor | None = None
    note: str = ""
    skipped: bool = False

    @property
    def best_s(self) -> float:
        return min(self.seconds) if self.seconds else float("nan")


def compile_probe(args: argparse.Namespace, model: str) -> tuple[bool, str]:
    """Compiles the predictor and runs one CFG step of the batch in a subprocess; (worked, note). Warms the inductor
    cache."""
    cmd = [sys.executable, __file__, "--compile-probe", model, "--checkpoints", str(args.checkpoints)]
    cmd += ["--batch", str(args.batch), "--chunk", str(args.chunk), "--threads", str(torch.get_num_threads())]
    timeout_s = args.compile_timeout
    began = time.perf_counter()
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout_s, check=False)
    except subprocess.TimeoutExpired:
        return False, f"torch.compile skipped: the probe did not compile and run within {timeout_s:g} s"
    if proc.returncode != 0:
        last = (proc.stderr.strip().splitlines() or ["?"])[-1][:200]
        return False, f"torch.compile skipped: the probe failed ({last})"
    return True, f"torch.compile probe compiled and ran in {time.perf_counter() - began:.0f} s"


def run_compile_probe(checkpoints: Path, model: str, batch: int, chunk: int) -> int:
    predict = worker_predictor(load_unet(checkpoints, model), compile=True, chunk=chunk)
    x, t = torch.randn(batch, 1, 28, 28), torch.rand(batch)
    cond = torch.cat([class_labels(batch), labels(None, batch)])
    with torch.inference_mode():
        predict(x, t, cond)
    return 0


def worker_predictor(net: CS180UNet, compile: bool = False, chunk: int = CPU_CHUNK) -> Predict:
    """The predictor over the network as a CPU worker holds it (worker/model_cache.py), optionally compiled."""
    predict = unet_predictor(for_inference(net, torch.device("cpu")))
    return chunked(compiled(predict) if compile else predict, chunk)


def repeated(predict: Predict) -> Predict:
    """`predict` given each image once per condition (x repeated k times): what sharing the encoder saves."""

    def run(x: torch.Tensor, t: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        k = branches(x, cond)
        return predict(x.repeat(k, 1, 1, 1), t.repeat(k), cond)

    return run


def build_variants(net: CS180UNet, kind: str, args: argparse.Namespace, model: str, bar: tqdm) -> list[Variant]:
    process = make_process(kind)
    times = process.times()
    cond = class_labels(args.batch)
    shape = image_shape(net)
    predict = worker_predictor(net, chunk=args.chunk)
    tick: OnStep = lambda _step: bar.update(1)  # noqa: E731

    def service(pred: Predict) -> torch.Tensor:
        return service_sample(pred, process, times, cond, args.seed, shape, GUIDANCE, on_step=tick)

    unshared = chunked(repeated(unet_predictor(for_inference(net, torch.device("cpu")))), args.chunk)
    wide = worker_predictor(net, chunk=2 * args.chunk)
    variants = [
        Variant("reference (spec B.4: 2 passes of B, fp32)", lambda: reference_sample(net, kind, cond, args.seed)),
        Variant(
            f"service (as the worker: shared encoder, BN folded, GELU in place, NHWC, {args.chunk} rows a pass)",
            lambda: service(predict),
        ),
        Variant(f"  the same at {2 * args.chunk} rows a pass", lambda: service(wide)),
        Variant("  the same, each image repeated per branch (2B images: no sharing)", lambda: service(unshared)),
        Variant("  the same sampler on the network as loaded (1 pass, unfolded)", lambda: service(unet_predictor(net))),
    ]
    if args.compile:
        worked, note = compile_probe(args, model)
        if worked:
            fast = worker_predictor(net, compile=True, chunk=args.chunk)
            variants.append(Variant("service + torch.compile", lambda: service(fast), note=note))
        else:
            variants.append(Variant("service + torch.compile", lambda: torch.empty(0), note=note, skipped=True))
    return variants


def timed(fn: Callable[[], torch.Tensor]) -> tuple[float, torch.Tensor]:
    began = time.perf_counter()
    out = fn()
    return time.perf_counter() - began, out


def measure(variants: list[Variant], rounds: int) -> None:
    """Every runnable variant once per round, the order reversed every other round; the last output is kept."""
    runnable = [v for v in variants if not v.skipped]
    for v in runnable:
        if "compile" in v.name:  # the compile (from the probe's cache) happens in an untimed warm-up run
            secs, _ = timed(v.run)
            v.note += f"; in-process warm-up run, compile included, {secs:.0f} s"
    for r in range(rounds):
        for v in runnable if r % 2 == 0 else runnable[::-1]:
            secs, v.output = timed(v.run)
            v.seconds.append(secs)


# ---------------------------------------------------------------------------------------------------------------------
# bf16


@dataclass
class Bf16Result:
    steps_timed: int
    seconds: list[float]
    est_images_per_s: float
    check_n: int
    max_abs_diff: float  # float pixels, full run, against fp32 service on the same seeds
    max_uint8_diff: int
    mkldnn_bf16: bool


def to_uint8(x: torch.Tensor) -> torch.Tensor:
    return (x.clamp(0, 1) * 255).round().to(torch.uint8)


def max_diff(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).abs().max())


def max_uint8_diff(a: torch.Tensor, b: torch.Tensor) -> int:
    return int((to_uint8(a).int() - to_uint8(b).int()).abs().max())


def measure_bf16(
    net: CS180UNet, kind: str, fp32: torch.Tensor, args: argparse.Namespace, bar: tqdm
) -> Bf16Result | None:
    if args.bf16_steps <= 0:
        return None
    process = make_process(kind)
    times = process.times()
    predict = unet_predictor(net)
    shape = image_shape(net)
    cond = class_labels(args.batch)
    tick: OnStep = lambda _step: bar.update(1)  # noqa: E731
    k = min(args.bf16_steps, len(times) - 1)
    seconds = []
    for _ in range(2):  # the first includes oneDNN's warm-up; the faster counts
        secs, _out = timed(
            lambda: service_sample(predict, process, times[: k + 1], cond, args.seed, shape, bf16=True, on_step=tick)
        )
        seconds.append(secs)
    est = min(seconds) / k * (len(times) - 1)
    n = min(args.bf16_check_n, args.batch)
    diff, diff8 = float("nan"), -1
    if n > 0:
        full = service_sample(predict, process, times, cond[:n], args.seed, shape, bf16=True, on_step=tick)
        diff, diff8 = max_diff(full, fp32[:n]), max_uint8_diff(full, fp32[:n])
    supported = bool(getattr(torch.ops.mkldnn, "_is_mkldnn_bf16_supported", lambda: False)())
    return Bf16Result(k, seconds, args.batch / est, n, diff, diff8, supported)


# ---------------------------------------------------------------------------------------------------------------------
# Report


def load_average() -> str:
    return " ".join(f"{load:.2f}" for load in os.getloadavg()) if hasattr(os, "getloadavg") else "?"


def machine_info() -> dict[str, str]:
    return {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "nproc": str(os.cpu_count() or "?"),
        "torch_threads": str(torch.get_num_threads()),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "platform": platform.platform(),
        "load_average_start": load_average(),
    }


def machine_lines(title: str, machine: dict[str, str]) -> list[str]:
    return [
        f"{title}, {machine['date']}",
        f"machine: nproc {machine['nproc']}, torch threads {machine['torch_threads']}, Python {machine['python']}, "
        f"torch {machine['torch']}, {machine['platform']}, malloc: {machine.get('malloc', '?')}",
        f"load average (1/5/15 min): {machine['load_average_start']} at the start, "
        f"{machine.get('load_average_end', '?')} at the end",
    ]


@dataclass
class ModelResult:
    model: str
    kind: str
    steps: int
    variants: list[Variant]
    bf16: Bf16Result | None

    def reference(self) -> Variant:
        return self.variants[0]

    def service(self) -> Variant:
        return self.variants[1]


def fmt_diff(v: Variant, against: Variant) -> str:
    if v is against or v.skipped or v.output is None or against.output is None:
        return ""
    return f"{max_diff(v.output, against.output):.1e}"


def variant_rows(res: ModelResult, batch: int) -> list[list[str]]:
    ref, svc = res.reference(), res.service()
    rows = []
    for v in res.variants:
        if v.skipped:
            rows.append([res.model, v.name, "skipped", "", "", "", ""])
            continue
        runs = ", ".join(f"{s:.1f}" for s in v.seconds)
        speed = ref.best_s / v.best_s
        rows.append(
            [res.model, v.name, f"{v.best_s:.1f} ({runs})", f"{batch / v.best_s:.2f}", f"{speed:.2f}x",
             fmt_diff(v, ref), fmt_diff(v, svc)]
        )  # fmt: skip
    if res.bf16 is not None:
        b = res.bf16
        name = f"service + bf16 autocast ({b.steps_timed} of {res.steps} steps, extrapolated)"
        per_run = batch / b.est_images_per_s
        diff = f"{b.max_abs_diff:.1e} (uint8 {b.max_uint8_diff}), {b.check_n} samples" if b.check_n else "not checked"
        rows.append(
            [res.model, name, f"~{per_run:.0f}", f"{b.est_images_per_s:.3f}", f"{ref.best_s / per_run:.2f}x", "",
             diff]
        )  # fmt: skip
    return rows


def target_rows(res: ModelResult) -> list[list[str]]:
    ref, svc = res.reference(), res.service()
    assert ref.output is not None and svc.output is not None
    diff = max_diff(svc.output, ref.output)
    same = diff <= SAME_PIXELS_ATOL
    speed = ref.best_s / svc.best_s
    return [
        [res.model, "same pixels: service vs reference, fp32, same seed", f"max |diff| {diff:.1e}",
         f"<= {SAME_PIXELS_ATOL:.0e}", "ok" if same else "MISSED"],
        [res.model, "  uint8 pixels that differ (after clamp and rounding)",
         f"{int((to_uint8(svc.output) != to_uint8(ref.output)).sum())} of {svc.output.numel()}", "", ""],
        [res.model, "service / reference images per second", f"{speed:.2f}x", f">= {TARGET_SPEEDUP:g}x",
         "ok" if speed >= TARGET_SPEEDUP else "MISSED"],
    ]  # fmt: skip


def table(header: list[str], rows: list[list[str]]) -> list[str]:
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    line = lambda cells: "  ".join(c.ljust(w) for c, w in zip(cells, widths, strict=True)).rstrip()  # noqa: E731
    return [line(header), line(["-" * w for w in widths]), *(line(r) for r in rows)]


def render(results: list[ModelResult], machine: dict[str, str], args: argparse.Namespace) -> str:
    lines = machine_lines("diffusion-jobs sampling benchmark", machine)
    lines.append(
        f"run: --batch {args.batch} --rounds {args.rounds}, CFG gamma {GUIDANCE:g}, seed {args.seed}; "
        "s/run is the fastest of the runs listed"
    )
    lines.append("")
    header = ["model", "sampler", "s/run (runs)", "images/s", "vs ref", "max|diff| vs ref", "max|diff| vs service"]
    rows = [row for res in results for row in variant_rows(res, args.batch)]
    lines += table(header, rows)
    targets = [row for res in results for row in target_rows(res)]
    lines += ["", *table(["model", "target", "measured", "target", "status"], targets)]
    notes = [f"{res.model}: {v.name}: {v.note}" for res in results for v in res.variants if v.note]
    notes += [
        f"{res.model}: bf16: oneDNN bf16 kernels {'available' if res.bf16.mkldnn_bf16 else 'not available'} on "
        f"this CPU; timed runs {', '.join(f'{s:.1f}' for s in res.bf16.seconds)} s for {res.bf16.steps_timed} steps"
        for res in results
        if res.bf16 is not None
    ]
    if notes:
        lines += ["", "notes:", *(f"- {n}" for n in notes)]
    return "\n".join(lines)


def to_json(results: list[ModelResult], machine: dict[str, str], args: argparse.Namespace) -> dict[str, Any]:
    out: dict[str, Any] = {"machine": machine, "args": {"batch": args.batch, "rounds": args.rounds, "seed": args.seed}}
    for res in results:
        ref, svc = res.reference(), res.service()
        assert ref.output is not None and svc.output is not None
        out[res.model] = {
            "steps": res.steps,
            "variants": [
                {
                    "name": v.name,
                    "seconds": v.seconds,
                    "best_s": v.best_s if v.seconds else None,
                    "images_per_s": args.batch / v.best_s if v.seconds else None,
                    "speedup_vs_reference": ref.best_s / v.best_s if v.seconds else None,
                    "max_abs_diff_vs_reference": (
                        max_diff(v.output, ref.output) if v.seconds and v.output is not None else None
                    ),
                    "note": v.note,
                }
                for v in res.variants
            ],
            "same_pixels_max_abs_diff": max_diff(svc.output, ref.output),
            "bf16": res.bf16.__dict__ if res.bf16 is not None else None,
        }
    return out


# ---------------------------------------------------------------------------------------------------------------------
# Main


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--batch", type=int, default=100, help="samples per run (default 100)")
    p.add_argument("--rounds", type=int, default=3, help="interleaved timed runs of each fp32 variant (default 3)")
    p.add_argument("--models", default="mnist-ddpm,mnist-flow", help="comma-separated (default both)")
    p.add_argument("--checkpoints", type=Path, default=CHECKPOINTS, help="folder of <model>/config.json")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, help="torch CPU threads (default: torch's)")
    p.add_argument(
        "--tuned-malloc",
        action="store_true",
        help="raise glibc's malloc thresholds first, as a worker does (worker/allocator.py): for every variant",
    )
    p.add_argument("--chunk", type=int, default=CPU_CHUNK, help=f"rows per forward pass (default {CPU_CHUNK})")
    p.add_argument("--no-compile", dest="compile", action="store_false", help="skip the torch.compile variant")
    p.add_argument("--compile-timeout", type=float, default=60.0, help="seconds the compile probe may take")
    p.add_argument("--bf16-steps", type=int, default=10, help="steps of the timed bf16 runs; 0 skips bf16")
    p.add_argument("--bf16-check-n", type=int, default=8, help="samples of the full bf16 run checked against fp32")
    p.add_argument("--json", type=Path, help="also write the figures as JSON to this path")
    p.add_argument("--compile-probe", metavar="MODEL", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    args.models = [m for m in args.models.split(",") if m]
    unknown = [m for m in args.models if m not in MODEL_OBJECTIVES]
    if unknown:
        p.error(f"unknown models {unknown}; known: {', '.join(MODEL_OBJECTIVES)}")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.tuned_malloc and not tune_malloc():
        sys.exit("--tuned-malloc: this C library's malloc could not be tuned (not glibc, or MALLOC_* is set)")
    if args.compile_probe:
        return run_compile_probe(args.checkpoints, args.compile_probe, args.batch, args.chunk)
    machine = machine_info()
    machine["malloc"] = "tuned (worker/allocator.py)" if args.tuned_malloc else "glibc's defaults"
    results = []
    for model in args.models:
        kind = MODEL_OBJECTIVES[model]
        net = load_unet(args.checkpoints, model)
        steps = len(make_process(kind).times()) - 1
        with tqdm(desc=model, unit="step", file=sys.stderr, dynamic_ncols=True) as bar:
            variants = build_variants(net, kind, args, model, bar)
            measure(variants, args.rounds)
            fp32 = variants[1].output
            assert fp32 is not None
            bf16 = measure_bf16(net, kind, fp32, args, bar)
        results.append(ModelResult(model, kind, steps, variants, bf16))
    machine["load_average_end"] = load_average()
    print(render(results, machine, args))
    if args.json:
        args.json.write_text(json.dumps(to_json(results, machine, args), indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
