"""What a training run is, apart from its loop (models/training.py): its configuration (`TrainConfig`), the state
that resumes it (`TrainState`), the network and noise process it builds, its seeds, and the device features it uses
(bfloat16, Adam's fused kernel)."""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache
from typing import Any, Literal, NotRequired, TypedDict

import numpy as np
import torch
from torch import Tensor

from models.processes import DDPM, Flow, NoiseProcess
from models.schedules import make_schedule
from models.unet import CS180UNet, DiffusersUNet, Net, init_weights

Objective = Literal["denoiser", "ddpm", "flow"]
OBJECTIVES: tuple[Objective, ...] = ("denoiser", "ddpm", "flow")
Arch = Literal["cs180", "unet2d"]
ARCHS: tuple[Arch, ...] = ("cs180", "unet2d")
BetaScheduleName = Literal["linear", "cosine"]
SCHEDULES: tuple[BetaScheduleName, ...] = ("linear", "cosine")
Loss = Literal["l2", "l1"]
LOSS_NAMES: tuple[Loss, ...] = ("l2", "l1")
LossWeight = Literal["uniform", "v", "min-snr"]
Distill = Literal["", "reflow", "progressive"]
DISTILLS: tuple[Distill, ...] = ("", "reflow", "progressive")
LOSS_WEIGHTS: tuple[LossWeight, ...] = ("uniform", "v", "min-snr")
DEFAULT_LR: dict[Objective, float] = {"denoiser": 1e-4, "ddpm": 1e-3, "flow": 1e-2}  # the specs' Adam rates
INIT, NOISE, SHUFFLE = 0, 1, 2  # generator streams derived from one seed


@dataclass(frozen=True)
class TrainConfig:
    objective: Objective = "flow"  # what the network learns: "denoiser" (x), "ddpm" (eps) or "flow" (x1 - x0)
    epochs: int = 10  # passes over the images
    batch_size: int = 128  # images per step (the last batch of an epoch may be smaller)
    lr: float | None = None  # Adam's initial rate; None: the spec's rate for the objective (DEFAULT_LR)
    lr_final_ratio: float = 0.1  # ExponentialLR gamma = ratio ** (1 / epochs): the rate ends 10x lower
    hidden: int = 64  # D: UNet hidden channels, used by `build_model`
    num_classes: int = 10  # class conditioning for `build_model`; 0 = unconditional
    modulation: str = "add"  # how t enters a time-only UNet: "add" (DDPM spec) or "mul" (flow spec)
    p_uncond: float = 0.1  # probability of dropping a label (c_mask = 0) for classifier-free guidance
    sigma: float = 0.5  # denoiser: the noise level of z = x + sigma eps
    num_timesteps: int = 300  # ddpm: T of the linear beta schedule
    beta_start: float = 1e-4  # ddpm: beta_0
    beta_end: float = 0.02  # ddpm: beta_{T-1}
    ema_decay: float = 0.999  # EMA of the weights, warmed up as min(decay, (1 + n) / (10 + n)) after n updates
    grad_clip: float | None = 1.0  # max global L2 norm of the gradients; None: no clipping
    seed: int = 0  # the one seed of init, noise, labels dropped and shuffling
    bf16: bool = False  # forward pass under bfloat16 autocast (the loss stays float32)
    channels_last: bool = False  # model and batches in channels-last memory format
    fused_adam: bool = False  # Adam's fused kernel (one kernel for all parameters) instead of the for-each one
    compile: bool = False  # the forward (and so the backward) pass under torch.compile; the first step compiles
    arch: Arch = "cs180"  # the network of `build_model`: the spec's CS180UNet, or diffusers' UNet2DModel ("unet2d")
    schedule: BetaScheduleName = "linear"  # ddpm: the beta schedule ("cosine": Improved DDPM's, ignores the beta range)
    loss: Loss = "l2"  # the distance between prediction and target: "l2" (mean squared error, the specs) or "l1"
    loss_weight: LossWeight = "uniform"  # ddpm: each timestep's weight in the loss (models/schedules.eps_loss_weights)
    distill: Distill = ""  # models/distill.py: "reflow" (flow on the teacher's pairs) or "progressive" (ddpm); "": none
    distill_steps: int = 0  # the student's steps (progressive: at the end of the last round)
    teacher_steps: int = 0  # the teacher's steps (progressive: the first's, distill_steps times a power of two)
    guidance_scale: float = 1.0  # the (first) teacher's CFG on class rows, baked into the student

    def __post_init__(self) -> None:
        choices = {
            "objective": OBJECTIVES,
            "arch": ARCHS,
            "schedule": SCHEDULES,
            "loss": LOSS_NAMES,
            "loss_weight": LOSS_WEIGHTS,
            "distill": DISTILLS,
        }
        for name, allowed in choices.items():
            if getattr(self, name) not in allowed:
                raise ValueError(f"{name} must be one of {allowed}, got {getattr(self, name)!r}")
        if self.epochs < 1 or self.batch_size < 1:
            raise ValueError(f"epochs and batch_size must be >= 1, got {self.epochs}, {self.batch_size}")
        if not 0.0 <= self.p_uncond <= 1.0 or not 0.0 <= self.ema_decay < 1.0:
            raise ValueError(f"need p_uncond in [0, 1], ema_decay in [0, 1), got {self.p_uncond}, {self.ema_decay}")

    @property
    def learning_rate(self) -> float:
        return self.lr if self.lr is not None else DEFAULT_LR[self.objective]


class TrainState(TypedDict):
    """Everything a run needs to go on exactly where it stopped (what `on_epoch` receives, what `state` takes)."""

    epoch: int  # epochs done
    step: int  # optimizer steps done
    model: dict[str, Tensor]
    ema: dict[str, Tensor]
    optimizer: dict[str, Any]
    scheduler: dict[str, Any]
    noise_rng: Tensor  # the NOISE generator's state (t, eps, x0, label drops)
    epoch_losses: list[float]  # mean loss of each epoch done
    step_losses: list[float]  # loss of every step done
    epoch_seconds: list[float]  # wall time of each epoch done
    config: dict[str, Any]  # the TrainConfig, as a dict
    teacher: NotRequired[dict[str, Tensor] | None]  # progressive: this round's teacher, None for the first (given)


def native_bf16(device: torch.device) -> bool:
    """Whether `device` runs bfloat16 convolutions natively: CUDA with bf16, or a CPU with AVX512-BF16 or AMX
    (oneDNN's kernels; elsewhere bf16 autocast is several times slower than float32)."""
    if device.type == "cuda":
        return bool(torch.cuda.is_bf16_supported())
    return device.type == "cpu" and bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())


def use_bf16(precision: str, device: torch.device) -> bool:
    """A train job's `precision` on `device`: "bf16", or "auto" where the device has native bf16."""
    return precision == "bf16" or (precision == "auto" and native_bf16(device))


@cache
def fused_adam_works(device: torch.device) -> bool:
    """Whether this torch has Adam's fused kernel for `device` (tried once per device and process)."""
    p = torch.zeros(2, device=device, requires_grad=True)
    p.grad = torch.ones_like(p)
    try:
        torch.optim.Adam([p], fused=True).step()
    except (RuntimeError, ValueError):
        return False
    return True


def derived_seed(*key: int) -> int:
    """A 63-bit seed from a tuple of ints (numpy's SeedSequence hash), so derived streams never coincide."""
    return int(np.random.SeedSequence(list(key)).generate_state(1, np.uint64)[0] >> np.uint64(1))


def build_model(config: TrainConfig, in_channels: int = 1, image_size: int = 28) -> Net:
    """The UNet of `config.arch` the objective needs, with weights drawn from the seed's INIT stream (not the global
    RNG)."""
    time_conditioned = config.objective != "denoiser"
    with torch.device("meta"):  # no draws here: init_weights draws every weight
        model: Net
        if config.arch == "cs180":
            model = CS180UNet(
                in_channels=in_channels,
                hidden=config.hidden,
                time_conditioned=time_conditioned,
                num_classes=config.num_classes,
                modulation=config.modulation,
                image_size=image_size,
            )
        else:
            model = DiffusersUNet(in_channels, config.hidden, time_conditioned, config.num_classes, image_size)
    model.to_empty(device="cpu")  # in place
    init_weights(model, torch.Generator().manual_seed(derived_seed(config.seed, INIT)))
    return model


def noise_process(config: TrainConfig) -> NoiseProcess:
    """The process a model trained with `config` samples with (the denoiser has none: it denoises in one step)."""
    if config.objective == "ddpm":
        return DDPM(make_schedule(config.schedule, config.num_timesteps, config.beta_start, config.beta_end))
    if config.objective == "flow":
        return Flow()
    raise ValueError("the single-step denoiser has no noise process")
