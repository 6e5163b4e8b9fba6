"""DeepFloyd IF through the service's loop, against diffusers' own pipelines on the same UNets, in one run.

    .venv/bin/python bench/deepfloyd.py [--n 4] [--rounds 3] [--stage1 SRC --stage2 SRC]

Without sources it builds the tiny random IF of the tests (16 px and 32 px); with them it loads the real stages
(local folders or hub ids in the local cache). Stage I: CFG sampling over the course's 990 -> 0 by 30 (34 steps);
stage II: 50 steps at noise level 250. Prints ms per step and images per second for each, and the loop's speed as a
ratio of the pipeline's, best of `--rounds` (this machine is shared: compare the ratios, not the times). fp16 on
CUDA, float32 on a CPU.
"""

from __future__ import annotations

import os
import sys

# Run as a script, this file's folder comes first on sys.path, where bench/queue.py would shadow the standard
# library's `queue`: the project's root takes its place.
if sys.path and os.path.abspath(sys.path[0] or ".") == os.path.dirname(os.path.abspath(__file__)):
    sys.path[0] = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

import argparse
import platform
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import torch
from diffusers import IFPipeline, IFSuperResolutionPipeline

from models.deepfloyd import if_predictor, low_res
from models.forward import randn_like_per_sample
from models.guidance import CFG
from models.processes import CLEAN, DDPM
from models.sampling import generators, sample_loop, start
from models.schedules import from_betas
from models.solvers import Native

STRIDED = list(range(990, -1, -30))


def best_of(rounds: int, run: Callable[[], object]) -> float:
    """The fastest of `rounds` timed runs, after one warm-up run."""
    run()
    times = []
    for _ in range(rounds):
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        start_s = time.perf_counter()
        run()
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start_s)
    return min(times)


def load(stage1: str | None, stage2: str | None, device: torch.device) -> tuple[IFPipeline, IFSuperResolutionPipeline]:
    if stage1 is None or stage2 is None:
        from tests.tiny_if import build

        first, second = build(Path(tempfile.mkdtemp(prefix="tiny-if-")))
        stage1, stage2 = str(first), str(second)
    dtype = torch.float16 if device.type == "cuda" else torch.float32
    common = {"safety_checker": None, "feature_extractor": None, "watermarker": None, "variant": "fp16", "dtype": dtype}
    one = IFPipeline.from_pretrained(stage1, **common).to(device)
    two = IFSuperResolutionPipeline.from_pretrained(stage2, text_encoder=None, tokenizer=None, **common).to(device)
    for pipe in (one, two):
        pipe.set_progress_bar_config(disable=True)
    return one, two


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=4, help="images per run")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--stage1", help="stage I: a folder or a hub id in the local cache (default: tiny random)")
    parser.add_argument("--stage2", help="stage II, likewise")
    args = parser.parse_args()
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    one, two = load(args.stage1, args.stage2, device)
    n = args.n
    embeds, uncond = one.encode_prompt("a high quality photo", device=device, clean_caption=False)
    cond, neg = embeds.expand(n, -1, -1), uncond.expand(n, -1, -1)
    size1, size2 = one.unet.config.sample_size, two.unet.config.sample_size

    process = DDPM(from_betas(one.scheduler.betas))
    predict = if_predictor(one.unet, process.schedule.num_timesteps)
    times = [float(t) for t in STRIDED] + [float(CLEAN)]

    def ours_one() -> torch.Tensor:
        gens = generators(0, n)
        x = start(process, times, 0, gens, torch.empty(n, 3, size1, size1, device=device))
        return sample_loop(Native(process, times), predict, CFG(cond, neg, 7.0), x, gens)

    def theirs_one() -> torch.Tensor:
        out = one(
            prompt_embeds=cond, negative_prompt_embeds=neg, timesteps=STRIDED, guidance_scale=7.0, output_type="pt"
        )
        return out.images

    small = torch.zeros(n, 3, size1, size1, device=device)
    process2, noising = DDPM(from_betas(two.scheduler.betas)), DDPM(from_betas(two.image_noising_scheduler.betas))
    times2 = process2.times(50)

    def ours_two() -> torch.Tensor:
        gens = generators(0, n)
        like = torch.empty(n, 3, size2, size2, device=device)
        condition = low_res(small, size2, noising, 250, randn_like_per_sample(like, generators(0, n, 2_000_003)))
        x = start(process2, times2, 0, gens, like)
        up = if_predictor(two.unet, process2.schedule.num_timesteps, condition)
        return sample_loop(Native(process2, times2), up, CFG(cond, neg, 4.0), x, gens)

    def theirs_two() -> torch.Tensor:
        out = two(image=small, prompt_embeds=cond, negative_prompt_embeds=neg, num_inference_steps=50, output_type="pt")
        return out.images

    with torch.inference_mode():
        rows = [
            ("stage I, CFG 7", len(times) - 1, best_of(args.rounds, ours_one), best_of(args.rounds, theirs_one)),
            ("stage II, CFG 4", len(times2) - 1, best_of(args.rounds, ours_two), best_of(args.rounds, theirs_two)),
        ]
    cpu = f"CPU, {os.cpu_count()} cores, {platform.machine()}"
    print(f"device: {torch.cuda.get_device_name() if device.type == 'cuda' else cpu}")
    print(f"stages: {size1} px and {size2} px, {n} images a run, best of {args.rounds}")
    print(
        f"{'':16} {'steps':>5} {'loop ms/step':>13} {'loop img/s':>11} {'pipeline ms/step':>17} {'loop/pipeline':>14}"
    )
    for name, steps, ours, theirs in rows:
        figures = f"{1e3 * ours / steps:13.2f} {n / ours:11.2f} {1e3 * theirs / steps:17.2f} {theirs / ours:13.2f}x"
        print(f"{name:16} {steps:5d} {figures}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
