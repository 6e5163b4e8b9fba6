"""Quality benchmark: what the shipped MNIST models' samples look like to a classifier trained on real digits.

    .venv/bin/python bench/quality.py [--models mnist-ddpm,mnist-flow] [--per-class 100] [--json PATH]
                                      [--guidance G] [--guidance-interval LO HI] [--clip-denoised]
                                      [--write-quality]

The judge is bench/classifier.py, a LeNet trained on 4,500 mnist-5k digits (450 per class) and tested on the 500
held out (the last 50 of each class). Every sample goes through the project's sampler (`start` + `sample_loop` with
`CFG`, `MultiView`, `Factorized` or `Inpaint` over the predictor a CPU worker uses), DDPM at all 300 steps, flow
matching at 50, and is rounded to uint8 as the service's PNGs are before it is judged. --guidance-interval LO HI
limits every guide to noise levels in [LO, HI], as a job's `guidance_interval` does; --clip-denoised clips each
step's clean estimate to [0, 1], as a job's `clip_denoised` does. For each model:

1. CFG samples, --per-class of each class (gamma 5, sample i seeded --seed + i): the fraction the classifier reads
   as the class asked (target >= 98 %), and the Frechet distance (the FID formula) between the classifier's
   penultimate features of the samples and of the 500 held-out digits, next to its floor, the same distance from
   the 4,500 training digits (target <= 2x the floor). The floor from as many training digits as samples is printed
   too: the distance is biased upward for small sets.
2. Visual anagrams (ANAGRAMS, --anagram-n each): the fraction of samples whose upright image reads as the first
   prompt, whose viewed image (turned by the view, as the service's view_i.png) reads as the second, and both.
3. Hybrids (HYBRIDS, --hybrid-n each; the service's default filter, Gaussian kernel 33, sigma 2): the fraction whose
   image seen from afar (blurred with a Gaussian of sigma AFAR_SIGMA) reads as the low prompt, whose full image reads
   as the high prompt, and both. The table also gives how many held-out digits still read right after that blur.
4. Inpainting (--inpaint-n held-out digits, the bottom half regenerated, CFG on the digit's class): the largest
   change of a kept pixel after uint8 rounding (must be 0), and the fraction that reads as the digit's class.

With both models, flow@50 must be at least as good as ddpm@300 (accuracy and distance). Prints a table (targets ok
or MISSED; the exit status is 0 either way); --json writes every figure; --write-quality writes each model's figures
to <checkpoints>/<model>/quality.json, which GET /v1/models shows; --grids DIR saves grids of the samples (a row
per class; anagrams upright over viewed; hybrids full over blurred; inpainting originals over results). Progress goes
to stderr.
"""

import os
import sys

# Run as a script, this file's folder comes first on sys.path, where bench/queue.py would shadow the standard
# library's `queue`; put the repository root there instead (bench/ is then a namespace package).
if sys.path and os.path.abspath(sys.path[0] or ".") == os.path.dirname(os.path.abspath(__file__)):
    sys.path[0] = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

import argparse
import json
import math
import shlex
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from bench.classifier import Judge, load_judge
from bench.reference import image_shape
from bench.sampling import (
    CHECKPOINTS,
    MODEL_OBJECTIVES,
    load_average,
    load_unet,
    machine_info,
    machine_lines,
    make_process,
    schedule_of,
    table,
    to_uint8,
)
from models.factorize import Frequency
from models.filters import gaussian_blur
from models.grid import make_grid
from models.guidance import CFG, Factorized, Guide, Interval, MultiView
from models.imageio import encode_png
from models.inference import CPU_CHUNK, chunked, for_inference
from models.judge import digits, features, frechet_distance, logits, split
from models.predictors import labels, unet_predictor
from models.processes import NoiseProcess, clipped
from models.sampling import Inpaint, generators, sample_loop, start
from models.solvers import Native
from models.unet import CS180UNet
from models.views import VIEWS

GUIDANCE = 5.0  # the spec's gamma; --guidance changes it
ANAGRAMS = [(6, 9, "rotate_180"), (9, 6, "flip"), (1, 7, "flip")]  # (upright, under the view, view)
HYBRIDS = [(1, 8), (0, 6)]  # (seen from afar: low frequencies, up close: high frequencies)
HYBRID_KERNEL, HYBRID_SIGMA = 33, 2.0  # the service's defaults (core/kinds/ HybridJob)
HYBRID_BANDS = Frequency(HYBRID_KERNEL, (HYBRID_SIGMA,))
AFAR_KERNEL, AFAR_SIGMA = 9, 1.5  # "seen from afar": this blur, then the classifier
INPAINT_STREAM = 1_000_003  # the kept pixels' noise: other generators than the samples' (as worker/generate.py)
SEEDS = {"cfg": 0, "anagram": 100_000, "hybrid": 200_000, "inpaint": 300_000}  # added to --seed
TARGET_ACCURACY = 0.98
TARGET_FD_RATIO = 2.0

GuideFor = Callable[[slice], Guide]  # the guide of the samples in a slice of the whole run
ConstrainFor = Callable[[slice, list[torch.Generator]], Inpaint]
Save = Callable[[str, torch.Tensor, int], None]  # (name, images (N, 1, 28, 28), per row): a grid for the eye


@dataclass(frozen=True)
class Subject:
    name: str
    net: CS180UNet
    process: NoiseProcess
    times: list[float]
    interval: tuple[float, float] | None  # --guidance-interval: guide only at noise levels sigma within it
    clip_denoised: bool = False  # --clip-denoised: each step's clean estimate clipped to [0, 1]


@dataclass(frozen=True)
class References:
    held_out: np.ndarray  # (500, F) classifier features of the held-out digits
    train: np.ndarray  # (4500, F) of the training digits
    held_images: torch.Tensor  # (500, 1, 28, 28) in [0, 1]
    held_labels: torch.Tensor  # (500,)


def quantize(x: torch.Tensor) -> torch.Tensor:
    """What a PNG keeps: clamped to [0, 1], rounded to 1/255."""
    return to_uint8(x).float() / 255


def predicted(judge: Judge, images: torch.Tensor) -> torch.Tensor:
    return logits(judge.net, images).argmax(1)


def sliced(make: Callable[..., Guide], *conditions: Any, **options: Any) -> GuideFor:
    """The guide `make(*conditions, **options)` of the samples in a slice: each (n,) condition, or each in a tuple of
    them, sliced."""

    def cut(c: Any, part: slice) -> Any:
        return tuple(one[part] for one in c) if isinstance(c, tuple) else c[part]

    return lambda part: make(*(cut(c, part) for c in conditions), **options)


def sample_batched(
    subject: Subject,
    n: int,
    seed: int,
    guide_for: GuideFor,
    batch: int,
    desc: str,
    constrain_for: ConstrainFor | None = None,
) -> torch.Tensor:
    """n samples (n, 1, 28, 28) in [0, 1], quantized; sample i seeded seed + i whatever the batch."""
    predict = chunked(unet_predictor(for_inference(subject.net, torch.device("cpu"))), CPU_CHUNK)  # as a CPU worker
    steps = len(subject.times) - 1
    shape = image_shape(subject.net)
    out = []
    with tqdm(total=-(-n // batch) * steps, desc=desc, unit="step", file=sys.stderr, dynamic_ncols=True) as bar:
        for lo in range(0, n, batch):
            part = slice(lo, min(n, lo + batch))
            m = part.stop - lo
            gens = generators(seed, m, offset=lo)
            constrain = constrain_for(part, generators(seed, m, offset=lo + INPAINT_STREAM)) if constrain_for else None
            with torch.inference_mode():
                x = start(subject.process, subject.times, 0, gens, torch.empty(m, *shape))
                guide = guide_for(part)
                if subject.interval is not None:
                    assert isinstance(guide, CFG | MultiView | Factorized)
                    guide = Interval(guide, subject.process.sigma, *subject.interval)
                x = sample_loop(
                    Native(subject.process, subject.times), predict, guide, x, gens, constrain, lambda _: bar.update()
                )
            out.append(quantize(x))
    return torch.cat(out)


# ---------------------------------------------------------------------------------------------------------------------
# The four measurements


def cfg_quality(
    subject: Subject, judge: Judge, refs: References, args: argparse.Namespace, save: Save
) -> dict[str, Any]:
    classes = torch.arange(10).repeat_interleave(args.per_class)  # (n,) 0 0 0 ... 9 9 9
    n = len(classes)
    uncond = labels(None, n)
    started = time.perf_counter()
    images = sample_batched(
        subject,
        n,
        args.seed + SEEDS["cfg"],
        sliced(CFG, classes, uncond, scale=args.guidance),
        args.batch,
        f"{subject.name} CFG",
    )
    seconds_per_image = (time.perf_counter() - started) / n
    hits = predicted(judge, images) == classes
    first = torch.arange(10)[:, None] * args.per_class + torch.arange(min(10, args.per_class))  # (10, <= 10)
    save("cfg", images[first.flatten()], first.shape[1])  # a row per class
    fd = frechet_distance(features(judge.net, images), refs.held_out)
    floor = frechet_distance(refs.train, refs.held_out)
    subset = np.random.default_rng(args.seed).choice(len(refs.train), min(n, len(refs.train)), replace=False)
    floor_same_n = frechet_distance(refs.train[subset], refs.held_out)
    return {
        "n": n,
        "guidance_scale": args.guidance,
        "guidance_interval": list(subject.interval) if subject.interval else None,
        "clip_denoised": subject.clip_denoised,
        "steps": len(subject.times) - 1,
        "seed": args.seed + SEEDS["cfg"],
        "class_accuracy": float(hits.float().mean()),
        "class_accuracy_per_class": [round(float(hits[classes == c].float().mean()), 4) for c in range(10)],
        "fd": fd,
        "fd_floor": floor,
        "fd_floor_same_n": floor_same_n,
        "fd_over_floor": fd / floor,
        "seconds_per_image": seconds_per_image,
    }


def rates(**hits: torch.Tensor) -> dict[str, float]:
    """The fraction of samples each boolean (n,) tensor holds for, and for all of them ("both")."""
    every = torch.stack(list(hits.values())).all(0)
    return {**{name: float(hit.float().mean()) for name, hit in hits.items()}, "both": float(every.float().mean())}


def anagram_quality(subject: Subject, judge: Judge, args: argparse.Namespace, save: Save) -> list[dict[str, Any]]:
    results = []
    n, uncond = args.anagram_n, labels(None, args.anagram_n)
    for k, (first, second, view_name) in enumerate(ANAGRAMS):
        view = VIEWS[view_name]
        p1, p2 = labels(first, n), labels(second, n)
        images = sample_batched(
            subject,
            n,
            args.seed + SEEDS["anagram"] + 1000 * k,
            sliced(MultiView, (p1, p2), uncond, views=(VIEWS["identity"], view), scale=args.guidance),
            args.batch,
            f"{subject.name} anagram {first}/{second} {view_name}",
        )
        upright = predicted(judge, images) == first
        save(f"anagram-{first}-{second}-{view_name}", torch.cat([images[:10], view.view(images[:10])]), 10)
        viewed = predicted(judge, view.view(images)) == second
        results.append({"prompts": [first, second], "view": view_name, "n": n, **rates(upright=upright, viewed=viewed)})
    return results


def afar(images: torch.Tensor) -> torch.Tensor:
    return gaussian_blur(images, AFAR_KERNEL, AFAR_SIGMA)


def hybrid_quality(subject: Subject, judge: Judge, args: argparse.Namespace, save: Save) -> list[dict[str, Any]]:
    results = []
    n, uncond = args.hybrid_n, labels(None, args.hybrid_n)
    for k, (low, high) in enumerate(HYBRIDS):
        lo, hi = labels(low, n), labels(high, n)
        images = sample_batched(
            subject,
            n,
            args.seed + SEEDS["hybrid"] + 1000 * k,
            sliced(Factorized, (lo, hi), uncond, decompose=HYBRID_BANDS, scale=args.guidance),
            args.batch,
            f"{subject.name} hybrid {low}/{high}",
        )
        from_afar = predicted(judge, afar(images)) == low
        save(f"hybrid-{low}-{high}", torch.cat([images[:10], afar(images[:10])]), 10)
        up_close = predicted(judge, images) == high
        bands = {"kernel_size": HYBRID_KERNEL, "sigma": HYBRID_SIGMA}
        results.append({"prompts": [low, high], "n": n, **bands, **rates(afar=from_afar, close=up_close)})
    return results


def inpaint_check(
    subject: Subject, judge: Judge, refs: References, args: argparse.Namespace, save: Save
) -> dict[str, Any]:
    n = args.inpaint_n
    per_class = len(refs.held_labels) // 10
    pick = torch.arange(n) % 10 * per_class + torch.arange(n) // 10  # held-out digits of every class in turn
    original, classes = refs.held_images[pick], refs.held_labels[pick]
    mask = torch.zeros(n, 1, 28, 28)
    mask[..., 14:, :] = 1.0  # 1 = regenerate: the bottom half
    uncond = labels(None, n)
    images = sample_batched(
        subject,
        n,
        args.seed + SEEDS["inpaint"],
        sliced(CFG, classes, uncond, scale=args.guidance),
        args.batch,
        f"{subject.name} inpaint",
        lambda s, gens: Inpaint(subject.process, original[s], mask[s], gens),
    )
    kept = mask == 0
    save("inpaint", torch.cat([original[:10], images[:10]]), 10)
    diff = (to_uint8(images).int() - to_uint8(original).int()).abs()
    return {
        "n": n,
        "mask": "bottom half regenerated (rows 14-27)",
        "max_kept_pixel_change_uint8": int(diff[kept.expand_as(diff)].max()),
        "class_accuracy": float((predicted(judge, images) == classes).float().mean()),
    }


# ---------------------------------------------------------------------------------------------------------------------
# Report


def rows_for(name: str, q: dict[str, Any]) -> list[list[str]]:
    s = q["samples"]
    acc_ok = s["class_accuracy"] >= TARGET_ACCURACY
    fd_ok = s["fd_over_floor"] <= TARGET_FD_RATIO
    worst = int(np.argmin(s["class_accuracy_per_class"]))
    rows = [
        [name, f"CFG samples: class accuracy ({s['n']} samples, {s['steps']} steps)",
         f"{100 * s['class_accuracy']:.1f} %", f">= {100 * TARGET_ACCURACY:g} %", "ok" if acc_ok else "MISSED"],
        [name, "  worst class", f"{worst}: {100 * s['class_accuracy_per_class'][worst]:.0f} %", "", ""],
        [name, "CFG samples: FD to held-out / floor", f"{s['fd']:.2f} / {s['fd_floor']:.2f} = "
         f"{s['fd_over_floor']:.2f}x", f"<= {TARGET_FD_RATIO:g}x", "ok" if fd_ok else "MISSED"],
        [name, f"  floor from {s['n']} training digits (same n)", f"{s['fd_floor_same_n']:.2f}", "", ""],
        [name, "  seconds per image (sampling, this CPU)", f"{s.get('seconds_per_image', math.nan):.3f}", "", ""],
    ]  # fmt: skip
    for a in q["anagrams"]:
        rows.append(
            [name, f"anagram {a['prompts'][0]}/{a['prompts'][1]} under {a['view']} (n {a['n']}): upright, viewed, both",
             f"{100 * a['upright']:.0f} / {100 * a['viewed']:.0f} / {100 * a['both']:.0f} %", "", ""]
        )  # fmt: skip
    for h in q["hybrids"]:
        rows.append(
            [name, f"hybrid {h['prompts'][0]} afar/{h['prompts'][1]} close (n {h['n']}): afar, close, both",
             f"{100 * h['afar']:.0f} / {100 * h['close']:.0f} / {100 * h['both']:.0f} %", "", ""]
        )  # fmt: skip
    ip = q["inpaint"]
    if ip is None:  # --cfg-only
        return rows
    rows += [
        [name, f"inpaint (n {ip['n']}): largest change of a kept pixel", f"{ip['max_kept_pixel_change_uint8']} / 255",
         "= 0", "ok" if ip["max_kept_pixel_change_uint8"] == 0 else "MISSED"],
        [name, "  inpainted digits read as their class", f"{100 * ip['class_accuracy']:.0f} %", "", ""],
    ]  # fmt: skip
    return rows


def comparison_rows(quality: dict[str, dict[str, Any]]) -> list[list[str]]:
    if "mnist-ddpm" not in quality or "mnist-flow" not in quality:
        return []
    d, f = quality["mnist-ddpm"]["samples"], quality["mnist-flow"]["samples"]
    ok = f["class_accuracy"] >= d["class_accuracy"] and f["fd"] <= d["fd"]
    value = (
        f"acc {100 * f['class_accuracy']:.1f} vs {100 * d['class_accuracy']:.1f} %, FD {f['fd']:.2f} vs {d['fd']:.2f}"
    )
    return [["flow vs ddpm", "flow@50 at least as good as ddpm@300", value, "acc >=, FD <=", "ok" if ok else "MISSED"]]


def render(judge: Judge, blur_control: float, quality: dict[str, dict[str, Any]], machine: dict[str, str]) -> str:
    lines = machine_lines("diffusion-jobs quality benchmark", machine)
    lines.append(
        f"classifier: LeNet {'trained now' if judge.trained_now else 'from var/bench/classifier.pt'} (key "
        f"{judge.key}), held-out accuracy {100 * judge.held_out_accuracy:.1f} % (500 digits: the last 50 of each class)"
    )
    lines.append(
        f"hybrids: generated with Gaussian kernel {HYBRID_KERNEL}, sigma {HYBRID_SIGMA:g}; 'afar' = blurred with "
        f"kernel {AFAR_KERNEL}, sigma {AFAR_SIGMA:g}, after which {100 * blur_control:.1f} % of held-out digits still "
        "read right"
    )
    lines.append("")
    rows = [row for name, q in quality.items() for row in rows_for(name, q)] + comparison_rows(quality)
    lines += table(["model", "figure", "measured", "target", "status"], rows)
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------------------------------------
# Main


def load_subject(
    checkpoints: Path,
    model: str,
    interval: tuple[float, float] | None = None,
    clip: bool = False,
    steps: int | None = None,
) -> Subject:
    process = make_process(MODEL_OBJECTIVES[model], schedule_of(checkpoints, model))
    if clip:
        process = clipped(process, 0.0, 1.0)  # the MNIST models' value range
    return Subject(model, load_unet(checkpoints, model), process, process.times(steps), interval, clip)


def references(judge: Judge) -> References:
    train_idx, held_idx = split()
    train_images, _ = digits(train_idx)
    held_images, held_labels = digits(held_idx)
    return References(features(judge.net, held_images), features(judge.net, train_images), held_images, held_labels)


def saver(folder: Path | None, model: str) -> Save:
    """Writes <folder>/<model>-<name>.png grids; does nothing without a folder."""

    def save(name: str, images: torch.Tensor, nrow: int) -> None:
        if folder is not None:
            folder.mkdir(parents=True, exist_ok=True)
            (folder / f"{model}-{name}.png").write_bytes(encode_png(make_grid(images, nrow=nrow)))

    return save


def evaluate(subject: Subject, judge: Judge, refs: References, args: argparse.Namespace) -> dict[str, Any]:
    save = saver(args.grids, subject.name)
    samples = cfg_quality(subject, judge, refs, args, save)
    if args.cfg_only:
        return {"samples": samples, "anagrams": [], "hybrids": [], "inpaint": None}
    return {
        "samples": samples,
        "anagrams": anagram_quality(subject, judge, args, save),
        "hybrids": hybrid_quality(subject, judge, args, save),
        "inpaint": inpaint_check(subject, judge, refs, args, save),
    }


def quality_record(q: dict[str, Any], judge: Judge, blur_control: float, machine: dict[str, str]) -> dict[str, Any]:
    return {
        "date": machine["date"],
        "command": shlex.join(sys.orig_argv),
        "classifier": {
            "arch": "LeNet: conv 5x5 32 - pool - conv 5x5 64 - pool - fc 128 - fc 10",
            "trained_on": "mnist-5k, 450 digits per class (all but the last 50 of each class)",
            "held_out": "mnist-5k, the last 50 digits of each class",
            "held_out_accuracy": judge.held_out_accuracy,
            "key": judge.key,
        },
        "afar_blur": {"kernel_size": AFAR_KERNEL, "sigma": AFAR_SIGMA, "held_out_accuracy_blurred": blur_control},
        **q,
        "torch": machine["torch"],
    }


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", default="mnist-ddpm,mnist-flow", help="comma-separated (default both)")
    p.add_argument("--checkpoints", type=Path, default=CHECKPOINTS, help="folder of <model>/config.json")
    p.add_argument("--guidance", type=float, default=GUIDANCE, help=f"CFG gamma of every sample (default {GUIDANCE:g})")
    p.add_argument(
        "--guidance-interval",
        nargs=2,
        type=float,
        metavar=("LO", "HI"),
        help="guide only at noise levels sigma in [LO, HI] (a job's guidance_interval); default: at every step",
    )
    p.add_argument(
        "--clip-denoised", action="store_true", help="clip each step's clean estimate to [0, 1] (a job's clip_denoised)"
    )
    p.add_argument("--cfg-only", action="store_true", help="the CFG samples' figures only (for sweeps)")
    p.add_argument(
        "--steps", type=int, help="sampling steps (flow: Euler steps; DDPM: evenly spaced timesteps); default: all"
    )
    p.add_argument("--per-class", type=int, default=100, help="CFG samples of each class (default 100)")
    p.add_argument("--anagram-n", type=int, default=50, help="samples of each anagram pair (default 50)")
    p.add_argument("--hybrid-n", type=int, default=50, help="samples of each hybrid pair (default 50)")
    p.add_argument("--inpaint-n", type=int, default=20, help="held-out digits inpainted (default 20)")
    p.add_argument("--batch", type=int, default=250, help="samples per batch (default 250)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, help="torch CPU threads (default: torch's)")
    p.add_argument("--json", type=Path, help="also write every figure as JSON to this path")
    p.add_argument("--grids", type=Path, help="also save grids of samples as PNGs in this folder")
    p.add_argument("--write-quality", action="store_true", help="write <checkpoints>/<model>/quality.json")
    args = p.parse_args(argv)
    args.models = [m for m in args.models.split(",") if m]
    unknown = [m for m in args.models if m not in MODEL_OBJECTIVES]
    if unknown:
        p.error(f"unknown models {unknown}; known: {', '.join(MODEL_OBJECTIVES)}")
    if args.guidance_interval is not None:
        args.guidance_interval = tuple(args.guidance_interval)
    missing = [m for m in args.models if not (args.checkpoints / m / "config.json").exists()]
    if missing:
        p.error(f"no checkpoint for {missing} under {args.checkpoints}")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    machine = machine_info()
    judge = load_judge()
    refs = references(judge)
    blur_control = float((predicted(judge, afar(refs.held_images)) == refs.held_labels).float().mean())
    quality: dict[str, dict[str, Any]] = {}
    for model in args.models:
        subject = load_subject(args.checkpoints, model, args.guidance_interval, args.clip_denoised, args.steps)
        quality[model] = evaluate(subject, judge, refs, args)
    machine["load_average_end"] = load_average()
    print(render(judge, blur_control, quality, machine))
    records = {m: quality_record(q, judge, blur_control, machine) for m, q in quality.items()}
    if args.json:
        args.json.write_text(json.dumps({"machine": machine, "models": records}, indent=1) + "\n")
    if args.write_quality:
        for model, record in records.items():
            (args.checkpoints / model / "quality.json").write_text(json.dumps(record, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
