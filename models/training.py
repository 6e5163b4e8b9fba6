"""Training loops for the CS180 UNets: one loop, three objectives (CS180 part B).

- `denoiser`: z = x + sigma eps, L2 between D(z) and x (B.1, B.2).
- `ddpm`: t ~ U{0 .. T-1}, x_t = sqrt(abar_t) x + sqrt(1 - abar_t) eps, L2 between eps_theta(x_t, t / T, c) and eps
  (algorithms B.1 and B.3 of the DDPM spec; its t in {1 .. T} is our schedule index t in {0 .. T-1}).
- `flow`: t ~ U[0, 1], x0 ~ N(0, I), x1 the data, x_t = (1 - t) x0 + t x1, L2 between u_theta(x_t, t, c) and
  x1 - x0 (algorithms B.1 and B.3 of the flow matching spec).

Distillation (models/distill.py) runs in the same loop: "reflow" is the flow loss on fixed pairs, each image with
the noise it was made from (`pair_noise`; a label of -1 is a pair the teacher made unguided, so its class is
dropped); "progressive" is the noise loss toward the targets of `teacher`'s two DDIM steps, in rounds of
`epochs / rounds` epochs, each round's teacher the previous round's EMA.

Two networks behind one call, `model(x, t, c, c_mask)` (models/unet.py): the spec's `CS180UNet` (arch "cs180", the
default) and diffusers' `UNet2DModel` with attention (arch "unet2d", for RGB image folders as seed 004 trained); DDPM
may use the cosine schedule and weigh its timesteps (`loss_weight`, models/schedules.eps_loss_weights), and any
objective an L1 loss instead of L2.

Images are (N, C, H, W) float in [0, 1], the value range the specs train in. A class-conditioned model sees its
label dropped (c_mask = 0) with probability p_uncond. Adam with an exponential decay stepped once per epoch, gradient
clipping, and an exponential moving average of the weights, which is the copy to sample from.

Randomness: every draw comes from generators derived from `config.seed` (init, noise, and one shuffle per epoch),
so a seed fixes the weights, and the state handed to `on_epoch` resumes a run exactly. A step whose loss is not
finite raises `TrainingDiverged` before it touches the weights, so the last epoch's state stays good.
"""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from models.datasets import ImageDataset
from models.distill import EpsModel, Round, rounds
from models.forward import ddpm_forward, sigma_forward
from models.schedules import eps_loss_weights, make_schedule
from models.train_config import NOISE, SHUFFLE, Loss, TrainConfig, TrainState, derived_seed
from models.unet import Net, set_memory_format

LOSSES: dict[Loss, Callable[..., Tensor]] = {"l2": F.mse_loss, "l1": F.l1_loss}
OnBatch = Callable[[int, int, int, float], None]  # (epoch, batch, batches_per_epoch, loss), per step; raise to stop
OnEpoch = Callable[[int, TrainState], None]  # (epoch just done, 0-based; the state after it)


DIVERGED_FACTOR = 1e3  # a step's loss this many times the run's first is a blow-up, not a bad batch


class TrainingDiverged(ArithmeticError):
    """A step's loss was not finite, or DIVERGED_FACTOR times the first step's: the learning rate is too high."""


@dataclass
class TrainResult:
    model: Net  # the raw trained weights
    ema: Net  # the moving average: the one to save and sample from
    num_images: int = 0  # images per epoch
    epoch_losses: list[float] = field(default_factory=list)
    step_losses: list[float] = field(default_factory=list)
    epoch_seconds: list[float] = field(default_factory=list)

    @property
    def images_per_second(self) -> float:
        """Training throughput over the epochs done (0 before the first)."""
        seconds = sum(self.epoch_seconds)
        return self.num_images * len(self.epoch_seconds) / seconds if seconds > 0 else 0.0


def dataset_tensors(data: ImageDataset) -> tuple[Tensor, Tensor]:
    """(images (N, C, H, W) float in [0, 1], labels (N,) int64), copied from the dataset's read-only arrays."""
    pixels = data.images[:, None] if data.channels == 1 else data.images.transpose(0, 3, 1, 2)  # (N, C, H, W)
    images = torch.from_numpy(np.ascontiguousarray(pixels, dtype=np.float32) / 255)
    return images, torch.from_numpy(data.labels.astype(np.int64))


class EMA:
    """An exponential moving average of a model's floating state (parameters and BatchNorm statistics)."""

    def __init__(self, model: Net, decay: float) -> None:
        self.model: Net = copy.deepcopy(model).eval().requires_grad_(False)
        self.decay = decay
        self.updates = 0

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        d = min(self.decay, (1 + self.updates) / (10 + self.updates))
        for avg, new in zip(self.model.state_dict().values(), model.state_dict().values(), strict=True):
            if avg.is_floating_point():
                avg.lerp_(new, 1.0 - d)  # avg = d avg + (1 - d) new
            else:
                avg.copy_(new)  # BatchNorm's batch counter
        self.updates += 1


def _objective_loss(
    model: Callable[..., Tensor],
    x: Tensor,
    y: Tensor | None,
    config: TrainConfig,
    abar: Tensor | None,
    weights: Tensor | None,
    gen: torch.Generator,
    conditioned: bool,
    z: Tensor | None = None,
    progressive: Round | None = None,
) -> Tensor:
    """One batch's loss. x (B, C, H, W) in [0, 1]; y (B,) labels (-1: none) or None; `model` the network's forward
    (compiled or not), class-conditioned or not; `weights` (T,) the DDPM loss's per-timestep weights, None for
    uniform; z (B, C, H, W) reflow's noise of each pair; `progressive` the round a progressive distillation is in.
    Draws on the CPU from `gen`."""
    B, dev = x.shape[0], x.device
    noise = z if z is not None else torch.randn(x.shape, generator=gen).to(dev, x.dtype)  # (B, C, H, W)
    if config.channels_last:
        noise = noise.contiguous(memory_format=torch.channels_last)
    c = c_mask = weight = None
    if conditioned:
        if y is None:
            raise ValueError("a class-conditioned model needs labels")
        c = y.clamp(min=0)
        kept = (torch.rand(B, generator=gen) >= config.p_uncond).to(dev) & (y >= 0)  # (B,)
        c_mask = kept.to(x.dtype)  # (B,) 0 = dropped
    with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=config.bf16):
        if progressive is not None:
            assert abar is not None
            i = torch.randint(0, progressive.steps, (B,), generator=gen).to(dev)  # (B,) a step of the student's grid
            x_t, t, target, weight = progressive.batch(x, noise, i, c, c_mask, abar)
            pred = model(x_t, t.to(x.dtype) / config.num_timesteps, c, c_mask)
        elif config.objective == "denoiser":
            z = sigma_forward(x, torch.tensor(config.sigma), noise)  # (B.2) z = x + sigma eps
            pred, target = model(z, c=c, c_mask=c_mask), x
        elif config.objective == "ddpm":
            assert abar is not None
            t = torch.randint(0, config.num_timesteps, (B,), generator=gen).to(dev)  # (B,)
            x_t = ddpm_forward(x, t, abar, noise)  # x_t = sqrt(abar_t) x0 + sqrt(1 - abar_t) eps
            pred, target = model(x_t, t.to(x.dtype) / config.num_timesteps, c, c_mask), noise
            weight = weights[t] if weights is not None else None  # (B,)
        else:
            t = torch.rand(B, generator=gen).to(dev, x.dtype)  # (B,)
            tt = t[:, None, None, None]  # (B, 1, 1, 1)
            x_t = (1 - tt) * noise + tt * x  # (B.3) x_t = (1 - t) x0 + t x1
            pred, target = model(x_t, t, c, c_mask), x - noise  # (B.4) u = x1 - x0
    if weight is None:
        return LOSSES[config.loss](pred.float(), target.float())
    per_image = LOSSES[config.loss](pred.float(), target.float(), reduction="none").flatten(1).mean(1)  # (B,)
    return (weight * per_image).mean()


def _snapshot(state_dict: dict[str, Any]) -> dict[str, Any]:
    return copy.deepcopy(state_dict)  # tensors cloned: training goes on changing the live ones


def _check_inputs(model: Net, images: Tensor, labels: Tensor | None, config: TrainConfig) -> None:
    if images.ndim != 4 or not images.is_floating_point():
        raise ValueError(f"images must be float (N, C, H, W), got {images.dtype} {tuple(images.shape)}")
    if labels is not None and labels.shape != (images.shape[0],):
        raise ValueError(f"labels must have shape ({images.shape[0]},), got {tuple(labels.shape)}")
    wants_time = config.objective != "denoiser"
    if bool(model.config["time_conditioned"]) != wants_time:
        raise ValueError(f"objective {config.objective!r} needs time_conditioned={wants_time}")


def train(
    model: Net,
    images: Tensor,  # (N, C, H, W) float in [0, 1]
    labels: Tensor | None,  # (N,) int64, or None for an unconditional model
    config: TrainConfig,
    on_batch: OnBatch | None = None,
    on_epoch: OnEpoch | None = None,
    state: TrainState | None = None,
    pair_noise: Tensor | None = None,  # reflow: (N, C, H, W) the noise each image was made from
    teacher: EpsModel | None = None,  # progressive: the first round's teacher
) -> TrainResult:
    """Train `model` in place (on its device) for config.epochs epochs, or what is left of them after `state`."""
    _check_inputs(model, images, labels, config)
    if (config.distill == "reflow") != (pair_noise is not None) or (config.distill == "progressive") != (
        teacher is not None
    ):
        raise ValueError(f"distill {config.distill!r} takes pair_noise (reflow) or a teacher (progressive)")
    loop = _Loop(model, images, labels, config, pair_noise, teacher)
    if state is not None:
        loop.resume(state)
    for epoch in range(loop.start, config.epochs):
        loop.run_epoch(epoch, on_batch)
        if on_epoch is not None:
            on_epoch(epoch, loop.state(epoch + 1))
    model.eval()
    return loop.result


class _Loop:
    """One call of `train`: the data on the model's device, the optimizer with its learning-rate schedule, the EMA,
    the NOISE stream, and the result so far."""

    def __init__(
        self,
        model: Net,
        images: Tensor,
        labels: Tensor | None,
        config: TrainConfig,
        pair_noise: Tensor | None = None,
        teacher: EpsModel | None = None,
    ) -> None:
        dev = next(model.parameters()).device
        self.model, self.config = model, config
        self.pair_noise = pair_noise.to(dev) if pair_noise is not None else None
        self.first_teacher = teacher  # progressive: the first round's teacher
        self.teacher_net: Net | None = None  # a later round's: the EMA at the end of the round before
        self.round: Round | None = None
        self.fmt = torch.channels_last if config.channels_last else torch.contiguous_format
        set_memory_format(model, self.fmt)
        self.images = images.to(dev)
        self.labels = labels.to(dev, torch.long) if labels is not None else None
        schedule = make_schedule(config.schedule, config.num_timesteps, config.beta_start, config.beta_end)
        self.abar = schedule.alphas_cumprod.to(dev)
        self.betas = schedule.betas
        uniform = config.loss_weight == "uniform"
        self.weights = None if uniform else eps_loss_weights(config.loss_weight, self.abar).to(dev)
        self.gen = torch.Generator().manual_seed(derived_seed(config.seed, NOISE))
        self.optimizer = torch.optim.Adam(model.parameters(), lr=config.learning_rate, fused=config.fused_adam or None)
        gamma = config.lr_final_ratio ** (1.0 / config.epochs)
        self.scheduler = torch.optim.lr_scheduler.ExponentialLR(self.optimizer, gamma=gamma)
        self.ema = EMA(model, config.ema_decay)
        self.forward: Callable[..., Tensor] = torch.compile(model) if config.compile else model
        self.conditioned = model.config["num_classes"] > 0
        self.result = TrainResult(model, self.ema.model, images.shape[0])
        self.start, self.step = 0, 0  # the first epoch to run; optimizer steps done
        self.steps_per_epoch = -(-images.shape[0] // config.batch_size)

    def resume(self, state: TrainState) -> None:
        """Goes on exactly where `state` stopped: weights, EMA, optimizer, schedule, noise stream and history."""
        self.model.load_state_dict(state["model"])
        self.ema.model.load_state_dict(state["ema"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.gen.set_state(state["noise_rng"])
        self.start, self.step = state["epoch"], state["step"]
        self.ema.updates = self.step
        teacher = state.get("teacher")
        if teacher is not None:
            self.teacher_net = copy.deepcopy(self.ema.model)
            self.teacher_net.load_state_dict(teacher)
        self.result.epoch_losses = list(state["epoch_losses"])
        self.result.step_losses = list(state["step_losses"])
        self.result.epoch_seconds = list(state["epoch_seconds"])

    def run_epoch(self, epoch: int, on_batch: OnBatch | None) -> None:
        """One pass over the images in the epoch's shuffled order, then the learning rate's decay."""
        began = time.perf_counter()
        if self.config.distill == "progressive":
            self.enter_round(epoch)
        self.model.train()
        N, B = self.images.shape[0], self.config.batch_size
        shuffle = torch.Generator().manual_seed(derived_seed(self.config.seed, SHUFFLE, epoch))
        order = torch.randperm(N, generator=shuffle).to(self.images.device)
        total = 0.0
        for i in range(self.steps_per_epoch):
            idx = order[i * B : (i + 1) * B]  # (B,)
            x = self.images[idx].contiguous(memory_format=self.fmt)  # (B, C, H, W)
            y = self.labels[idx] if self.labels is not None else None
            z = self.pair_noise[idx].contiguous(memory_format=self.fmt) if self.pair_noise is not None else None
            value = self.batch(x, y, epoch, i, z)
            total += value
            if on_batch is not None:
                on_batch(epoch, i, self.steps_per_epoch, value)
        self.scheduler.step()
        self.result.epoch_losses.append(total / self.steps_per_epoch)
        self.result.epoch_seconds.append(time.perf_counter() - began)

    def enter_round(self, epoch: int) -> None:
        """Progressive: the round of `epoch`. Its first epoch makes the last round's EMA the teacher (Salimans & Ho
        2022, algorithm 2: the student of one round teaches the next), at half the steps."""
        c = self.config
        k = rounds(c.teacher_steps, c.distill_steps)
        per_round = c.epochs // k
        r = min(epoch // per_round, k - 1)
        if epoch == r * per_round and r > 0:
            self.teacher_net = copy.deepcopy(self.ema.model).eval().requires_grad_(False)
        steps = c.teacher_steps // 2 ** (r + 1)
        if self.round is None or self.round.steps != steps:
            teacher = self.teacher_net if r > 0 else self.first_teacher
            assert teacher is not None, "a later round's teacher is in the state"
            self.round = Round.of(teacher, self.betas, steps, c.guidance_scale if r == 0 else 1.0)

    def batch(self, x: Tensor, y: Tensor | None, epoch: int, i: int, z: Tensor | None = None) -> float:
        """One optimizer step on batch `i` of `epoch`; its loss. Raises TrainingDiverged before touching weights."""
        loss = _objective_loss(
            self.forward, x, y, self.config, self.abar, self.weights, self.gen, self.conditioned, z, self.round
        )
        value = float(loss.item())
        self.check_diverged(value, epoch, i)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if self.config.grad_clip is not None:
            nn.utils.clip_grad_norm_(self.model.parameters(), self.config.grad_clip)
        self.optimizer.step()
        self.ema.update(self.model)
        self.step += 1
        self.result.step_losses.append(value)
        return value

    def check_diverged(self, value: float, epoch: int, i: int) -> None:
        """Raises TrainingDiverged for a loss that is not finite, or DIVERGED_FACTOR times the run's first."""
        first = self.result.step_losses[0] if self.result.step_losses else value
        if math.isfinite(value) and value <= DIVERGED_FACTOR * first:
            return
        lr = self.optimizer.param_groups[0]["lr"]
        grown = f", {value / first:.3g} times its first value" if math.isfinite(value) else ""
        raise TrainingDiverged(
            f"the loss became {value:.4g} at epoch {epoch + 1}, step {i + 1}{grown} (learning rate {lr:.3g}): "
            "lower `lr`"
        )

    def state(self, epochs_done: int) -> TrainState:
        """A copy of everything needed to resume after `epochs_done` epochs (what `on_epoch` receives)."""
        return TrainState(
            epoch=epochs_done,
            step=self.step,
            model=_snapshot(self.model.state_dict()),
            ema=_snapshot(self.ema.model.state_dict()),
            optimizer=_snapshot(self.optimizer.state_dict()),
            scheduler=_snapshot(self.scheduler.state_dict()),
            noise_rng=self.gen.get_state(),
            epoch_losses=list(self.result.epoch_losses),
            step_losses=list(self.result.step_losses),
            epoch_seconds=list(self.result.epoch_seconds),
            config=asdict(self.config),
            teacher=_snapshot(self.teacher_net.state_dict()) if self.teacher_net is not None else None,
        )
