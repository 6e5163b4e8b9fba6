"""Steps x solver: what each sampler makes of each shipped diffusion model at few steps (docs/api.md, "Samplers").

    .venv/bin/python bench/steps.py [--models mnist-ddpm,mnist-flow,mnist-flow-2step] [--steps 1,2,4,8,16,32]
                                    [--per-class 50] [--samplers dpmpp_2m,unipc] [--json PATH]

For every model, sampler of its family and step count (a sampler that needs more steps than given is skipped): CFG
samples at the model's guidance scale, --per-class of each class (sample i seeded i), through the worker's loop
(`make_solver` + `sample_loop` over the predictor a CPU worker uses), rounded to uint8 as the service's PNGs are, read
by the shipped judge (models/judge.py): class accuracy, Frechet distance of its features to the held-out digits, the
network calls per image (x2 for CFG's branches is not counted), and images per second on this machine. Each model's
reference row is its default sampler at its default steps (ancestral DDPM at 300, Euler at 50).

Targets (issue 25): mnist-ddpm with some solver at <= 20 steps within 10 % of its 300-step ancestral FD and >= 98 %
accuracy; a distilled model at 2 steps within 10 % of mnist-flow at 50 steps, >= 98 %; at 1 step within 25 %.
Prints the table and the targets (ok or MISSED; the exit status is 0 either way); progress goes to stderr.
"""

import os
import sys

# As in bench/all.py: bench/queue.py would shadow the standard library's `queue` when run as a script.
if sys.path and os.path.abspath(sys.path[0] or ".") == os.path.dirname(os.path.abspath(__file__)):
    sys.path[0] = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

import argparse
import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from tqdm import tqdm

from bench.sampling import CHECKPOINTS, load_unet, machine_info, machine_lines, table
from core.catalog import builtin_models
from core.model_spec import ModelSpec
from core.settings import Settings
from models.guidance import CFG
from models.inference import chunk_size, chunked, for_inference
from models.judge import judge_digits
from models.predictors import labels, unet_predictor
from models.processes import DDPM, Flow, NoiseProcess
from models.sampling import generators, sample_loop, start
from models.schedules import make_schedule
from models.solvers import make_solver

STEPS = (1, 2, 4, 8, 16, 32)
TEACHER = "mnist-flow"


@dataclass(frozen=True)
class Row:
    model: str
    sampler: str
    steps: int
    calls: int  # network calls per image (a CFG call runs both branches at once)
    accuracy: float
    fd: float
    images_per_s: float
    reference: bool = False


def process_of(spec: ModelSpec) -> NoiseProcess:
    if spec.is_flow:
        return Flow(default_steps=int(spec.defaults.get("steps", 50)))
    s = spec.schedule
    return DDPM(make_schedule(s.get("beta_schedule", "linear"), s["num_timesteps"], s["beta_start"], s["beta_end"]))


def run(spec: ModelSpec, predict: Any, sampler: str, steps: int, per_class: int, scale: float) -> Row:
    process = process_of(spec)
    n = 10 * per_class
    classes = torch.arange(n) % 10
    calls = 0

    def counted(x: torch.Tensor, t: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        nonlocal calls
        calls += 1
        out: torch.Tensor = predict(x, t, c)
        return out

    solver = make_solver(process, sampler, steps, None, None, None)
    gens = generators(0, n)
    began = time.perf_counter()
    with torch.inference_mode():
        x = start(process, solver.times, 0, gens, torch.empty(n, 1, 28, 28))
        out = sample_loop(solver, counted, CFG(classes, labels(None, n), scale), x, gens)
    seconds = time.perf_counter() - began
    images = (out.clamp(0, 1) * 255).round() / 255  # as the service's PNGs
    quality = judge_digits(images, classes)
    reference = sampler == spec.default_sampler and steps == spec.defaults.get("steps", 300)
    assert quality.class_accuracy is not None
    return Row(spec.id, sampler, steps, calls, quality.class_accuracy, quality.fd, n / seconds, reference)


def plan(spec: ModelSpec, steps: tuple[int, ...], only: set[str] | None) -> list[tuple[str, int]]:
    default_steps = int(spec.defaults.get("steps", 300))
    runs = [(spec.default_sampler, default_steps)]
    for name, info in spec.samplers.items():
        if only is not None and name not in only:
            continue
        runs += [(name, k) for k in steps if k >= info.min_steps and (name, k) != runs[0]]
    return runs


def targets(rows: list[Row]) -> list[str]:
    def best(model: str, max_steps: int) -> Row | None:
        fit = [r for r in rows if r.model == model and r.steps <= max_steps and not r.reference]
        return min(fit, key=lambda r: r.fd) if fit else None

    def ref(model: str) -> Row | None:
        return next((r for r in rows if r.model == model and r.reference), None)

    lines = []
    ddpm, ddpm_ref = best("mnist-ddpm", 20), ref("mnist-ddpm")
    if ddpm and ddpm_ref:
        ok = ddpm.fd <= 1.1 * ddpm_ref.fd and ddpm.accuracy >= 0.98
        lines.append(
            f"mnist-ddpm <= 20 steps: best {ddpm.sampler}@{ddpm.steps} FD {ddpm.fd:.1f} vs {ddpm_ref.fd:.1f} at 300 "
            f"({ddpm.fd / ddpm_ref.fd:.3f}x, target <= 1.10x), accuracy {ddpm.accuracy:.3f}: {'ok' if ok else 'MISSED'}"
        )
    teacher = ref(TEACHER)
    for model in sorted({r.model for r in rows if r.model.startswith(TEACHER + "-")}):
        for k, bound in ((2, 1.10), (1, 1.25)):
            row = next((r for r in rows if r.model == model and r.steps == k and r.sampler == "euler"), None)
            if row and teacher:
                ok = row.fd <= bound * teacher.fd and (k == 1 or row.accuracy >= 0.98)
                lines.append(
                    f"{model} at {k} step(s): FD {row.fd:.1f} vs {TEACHER}@50 {teacher.fd:.1f} "
                    f"({row.fd / teacher.fd:.3f}x, target <= {bound:.2f}x), accuracy {row.accuracy:.3f}: "
                    f"{'ok' if ok else 'MISSED'}"
                )
    return lines


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", default="mnist-ddpm,mnist-flow,mnist-flow-2step")
    parser.add_argument("--steps", default=",".join(map(str, STEPS)))
    parser.add_argument("--per-class", type=int, default=50)
    parser.add_argument("--samplers", default=None, help="only these (the reference rows always run)")
    parser.add_argument("--json", type=Path, default=None)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    torch.manual_seed(0)
    specs = builtin_models(Settings())
    steps = tuple(int(k) for k in args.steps.split(","))
    only = None if args.samplers is None else set(args.samplers.split(","))
    rows: list[Row] = []
    for model in args.models.split(","):
        spec = specs.get(model)
        if spec is None or spec.checkpoint is None:
            print(f"skipping {model}: not shipped here", file=sys.stderr)
            continue
        net = load_unet(CHECKPOINTS, model)
        predict = chunked(unet_predictor(for_inference(net, torch.device("cpu"))), chunk_size(torch.device("cpu")))
        scale = float(spec.defaults.get("guidance_scale", 5.0))
        for sampler, k in tqdm(plan(spec, steps, only), desc=model, file=sys.stderr):
            rows.append(run(spec, predict, sampler, k, args.per_class, scale))
    header = ["model", "sampler", "steps", "calls", "accuracy", "FD", "images/s"]
    body = [
        [
            r.model + (" (ref)" if r.reference else ""),
            r.sampler,
            str(r.steps),
            str(r.calls),
            f"{r.accuracy:.3f}",
            f"{r.fd:.1f}",
            f"{r.images_per_s:.1f}",
        ]
        for r in rows
    ]
    print(f"per class {args.per_class} ({10 * args.per_class} samples per row), judge: models/judge.py")
    print(*machine_lines("bench/steps.py", machine_info()), sep="\n")
    print(*table(header, body), sep="\n")
    print(*targets(rows), sep="\n")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"rows": [asdict(r) for r in rows], "machine": machine_info()}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
