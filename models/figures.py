"""The deliverables of CS180 part B as pictures: grids (C, H, W) in [0, 1] that the worker encodes as PNG, and the
loss curve as PNG bytes (matplotlib's Agg canvas through `Figure`, no pyplot state).

- `noising_figure`: z = x + sigma eps over the spec's sigmas (figure 3).
- `loss_figure`: the training loss per step and smoothed (figure 4).
- `denoised_figure`, `ood_figure`, `pure_noise_figure`, `mean_image`: the single-step denoiser on test images at its
  sigma (figures 5, 6), at other sigmas (figure 7), on pure noise, and the training set's mean image (part 1.2.3),
  which is what a denoiser of pure noise converges to: the L2-best guess of x from input that says nothing about x.
- `class_samples`, `uncond_samples`: samples of a diffusion or flow model with the project's sampler (or the
  solver given: a distilled student's), plus the frames of a GIF of the process.

Networks (models.unet.Net, in eval mode: an EMA copy is) are called through `unet_predictor`. Noise is drawn on the
CPU from the generator or seed given, then moved to the network's device; what comes back is on the CPU.
"""

from __future__ import annotations

import io
from collections.abc import Sequence

import numpy as np
import torch
from matplotlib.figure import Figure
from torch import Tensor

from models.grid import make_grid
from models.guidance import CFG
from models.inference import chunk_size, chunked, for_inference
from models.predictors import labels, unet_predictor
from models.processes import NoiseProcess
from models.sampling import OnStep, Step, generators, sample_loop, start
from models.solvers import Native, Solver
from models.unet import Net

SIGMAS = (0.0, 0.2, 0.4, 0.5, 0.6, 0.8, 1.0)  # the spec's noise levels (figures 3 and 7)
FRAME_EVERY, FRAME_LAST = 20, 8  # GIF frames: the first step, every 20th, and the last 8
UNCOND_PER_ROW = 8  # 40 unconditional samples: 5 rows of 8


def is_frame(index: int, total: int) -> bool:
    """Whether step `index` (1-based) of `total` goes into the GIF (the service's GIFs and the training figures)."""
    return index == 1 or index % FRAME_EVERY == 0 or index > total - FRAME_LAST


def _device(net: Net) -> torch.device:
    return next(net.parameters()).device


@torch.inference_mode()
def _denoise(net: Net, z: Tensor) -> Tensor:
    """The single-step denoiser's D(z), z (B, C, H, W) on the CPU; unconditional."""
    dev, n = _device(net), z.shape[0]
    predict = unet_predictor(net)
    out = predict(z.to(dev), torch.zeros(n, device=dev), labels(None, n, dev))  # (B, C, H, W)
    return out.float().cpu()


def _noisy(images: Tensor, sigmas: Sequence[float], generator: torch.Generator | None) -> Tensor:
    """(N, S, C, H, W): z = x + sigma eps for each image and sigma, one eps per image (so columns differ by sigma)."""
    gen = generator if generator is not None else torch.Generator().manual_seed(0)
    x = images.float().cpu()  # (N, C, H, W)
    eps = torch.randn(x.shape, generator=gen)  # (N, C, H, W)
    s = torch.tensor(list(sigmas), dtype=torch.float32)[None, :, None, None, None]  # (1, S, 1, 1, 1)
    return x[:, None] + s * eps[:, None]  # (N, S, C, H, W)


def noising_figure(
    images: Tensor, sigmas: Sequence[float] = SIGMAS, generator: torch.Generator | None = None
) -> Tensor:
    """images (N, C, H, W) in [0, 1] -> a row per image, a column per sigma of z = x + sigma eps, clamped."""
    z = _noisy(images, sigmas, generator).clamp(0, 1)  # (N, S, C, H, W)
    return make_grid(z.flatten(0, 1), nrow=len(sigmas))


def denoised_figure(net: Net, images: Tensor, sigma: float = 0.5, generator: torch.Generator | None = None) -> Tensor:
    """Rows: the clean images (N, C, H, W), them noised at sigma, and the denoiser's output; a column per image."""
    z = _noisy(images, [sigma], generator)[:, 0]  # (N, C, H, W)
    rows = torch.cat([images.float().cpu(), z, _denoise(net, z)]).clamp(0, 1)  # (3N, C, H, W)
    return make_grid(rows, nrow=len(images))


def ood_figure(
    net: Net, images: Tensor, sigmas: Sequence[float] = SIGMAS, generator: torch.Generator | None = None
) -> Tensor:
    """For each image, the noisy row (a column per sigma) over the denoised row: sigmas it was not trained on."""
    z = _noisy(images, sigmas, generator)  # (N, S, C, H, W)
    out = _denoise(net, z.flatten(0, 1)).view_as(z)  # (N, S, C, H, W)
    rows = torch.stack([z, out], dim=1).clamp(0, 1)  # (N, 2, S, C, H, W)
    return make_grid(rows.flatten(0, 2), nrow=len(sigmas))


def pure_noise_figure(
    net: Net, n: int = 8, generator: torch.Generator | None = None, image_shape: tuple[int, int, int] | None = None
) -> Tensor:
    """The denoiser applied to pure noise z = eps (part 1.2.3): noise (clamped) over the output, n columns.
    image_shape (C, H, W) defaults to the network's."""
    gen = generator if generator is not None else torch.Generator().manual_seed(0)
    shape = image_shape or (net.config["in_channels"], net.config["image_size"], net.config["image_size"])
    z = torch.randn((n, *shape), generator=gen)  # (n, C, H, W)
    return make_grid(torch.cat([z, _denoise(net, z)]).clamp(0, 1), nrow=n)


def mean_image(images: Tensor) -> Tensor:
    """(C, H, W): the mean of images (N, C, H, W) in [0, 1]."""
    return images.float().mean(0)


# ---------------------------------------------------------------------------------------------------------------------
# Samples


def _samples(
    net: Net,
    process: NoiseProcess,
    times: list[float],
    guide: CFG,
    seed: int,
    per_row: int,
    on_step: OnStep | None,
    solver: Solver | None = None,
) -> tuple[Tensor, list[Tensor]]:
    """len(guide.cond) samples from pure noise, sample i seeded seed + i, in [0, 1], and the GIF's frames (grids of
    the state at the steps `is_frame` picks, per_row samples a row). `solver` replaces the process's own step over
    `times` (its own times are the run's)."""
    solver = solver or Native(process, times)
    n, dev = len(guide.cond), _device(net)
    C, S = net.config["in_channels"], net.config["image_size"]
    gens = generators(seed, n)
    frames: list[Tensor] = []

    def record(step: Step) -> None:
        if is_frame(step.index, step.total):
            frames.append(make_grid(step.x.float().cpu().clamp(0, 1), nrow=per_row))
        if on_step is not None:
            on_step(step)

    with torch.inference_mode():
        x = start(process, solver.times, 0, gens, torch.empty(n, C, S, S, device=dev))  # (n, C, H, W)
        predict = chunked(unet_predictor(for_inference(net, dev)), chunk_size(dev))  # as a worker samples
        out = sample_loop(solver, predict, guide, x, gens, on_step=record)
    return out.float().cpu().clamp(0, 1), frames


def class_samples(
    net: Net,
    process: NoiseProcess,
    times: list[float],
    classes: int,
    per_class: int = 4,
    guidance: float = 5.0,
    seed: int = 0,
    on_step: OnStep | None = None,
    solver: Solver | None = None,
) -> tuple[Tensor, list[Tensor]]:
    """per_class samples of each class with CFG: (classes * per_class, C, H, W) in [0, 1], sample k of class
    k % classes (a grid of `classes` per row has a column per class), and the GIF's frames."""
    cond = torch.arange(classes, device=_device(net)).repeat(per_class)  # (classes * per_class,)
    guide = CFG(cond, labels(None, len(cond), cond.device), guidance)
    return _samples(net, process, times, guide, seed, classes, on_step, solver)


def uncond_samples(
    net: Net,
    process: NoiseProcess,
    times: list[float],
    n: int = 40,
    seed: int = 0,
    on_step: OnStep | None = None,
    solver: Solver | None = None,
) -> tuple[Tensor, list[Tensor]]:
    """n unconditional samples (n, C, H, W) in [0, 1], and the GIF's frames (UNCOND_PER_ROW a row)."""
    guide = CFG(labels(None, n, _device(net)), None)
    return _samples(net, process, times, guide, seed, UNCOND_PER_ROW, on_step, solver)


# ---------------------------------------------------------------------------------------------------------------------
# The loss curve


def loss_figure(step_losses: Sequence[float], steps_per_epoch: int, title: str) -> bytes:
    """PNG bytes: the loss of every step (thin) and its centered moving average over an epoch (at most a fifth of the
    run), log y axis; steps below, epochs above."""
    if not step_losses or steps_per_epoch < 1:
        raise ValueError(f"need at least one loss and steps_per_epoch >= 1, got {len(step_losses)}, {steps_per_epoch}")
    losses = np.asarray(step_losses, dtype=np.float64)  # (steps,)
    steps = np.arange(1, len(losses) + 1)
    window = max(1, min(steps_per_epoch, len(losses) // 5))
    smooth = np.convolve(losses, np.ones(window) / window, mode="valid")  # (steps - window + 1,) means of windows
    centers = steps[(window - 1) // 2 :][: len(smooth)]  # each mean drawn at its window's middle step

    fig = Figure(figsize=(6.4, 4.0), dpi=100, layout="constrained")
    ax = fig.add_subplot()
    ax.plot(steps, losses, linewidth=0.6, alpha=0.45, color="tab:blue", label="per step")
    ax.plot(centers, smooth, linewidth=1.8, color="tab:orange", label=f"mean of {window} steps")
    ax.set_yscale("log", nonpositive="mask")
    ax.set(title=title, xlabel="step", ylabel="loss", xlim=(0, len(losses) + 1))
    ax.grid(True, which="both", alpha=0.25)
    ax.legend()
    to_epoch, to_step = (lambda s: np.asarray(s) / steps_per_epoch), (lambda e: np.asarray(e) * steps_per_epoch)
    epochs = ax.secondary_xaxis("top", functions=(to_epoch, to_step))
    epochs.set_xlabel("epoch")
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    return buffer.getvalue()
