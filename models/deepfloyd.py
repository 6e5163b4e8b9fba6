"""DeepFloyd IF's UNets behind the loop's one call, `predict(x, t, cond) -> estimate` (models/guidance.py).

A condition is a T5 text embedding per sample (N, L, D); the empty prompt's is the unconditional branch. The
estimate is IF's 6 channels: the noise estimate, then the learned variance that `models.processes.DDPM` steps with.
Stage II (64 -> 256 px) sees, beside the noisy state, the low-resolution image upscaled and itself noised to
`noise_level` (its "augmentation level", also given as its class label), as diffusers' IFSuperResolutionPipeline
feeds it. The network runs in its own dtype (fp16 on CUDA); the loop's state stays float32.
"""

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from models.guidance import Predict
from models.predictors import branches
from models.processes import DDPM


@dataclass(frozen=True)
class LowRes:
    """Stage II's conditioning image: (N, 3, S, S), upscaled to the stage's size S and noised to `noise_level`."""

    image: torch.Tensor
    noise_level: int


def if_predictor(unet: nn.Module, num_timesteps: int, low_res: LowRes | None = None) -> Predict:
    """IF's UNet (diffusers' UNet2DConditionModel) as a predictor; given `low_res`, stage II's."""
    dtype = next(unet.parameters()).dtype

    def predict(x: torch.Tensor, t: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        k = branches(x, cond)
        rows = x if low_res is None else torch.cat([x, low_res.image], dim=1)  # (N, 3 or 6, S, S)
        rows = rows.repeat(k, 1, 1, 1) if k > 1 else rows  # (k N, ...) one copy per branch
        timesteps = (t.repeat(k) * num_timesteps).round().long()  # the loop's t / T back to the schedule's index
        labels = None if low_res is None else torch.full_like(timesteps, low_res.noise_level)
        out: torch.Tensor = unet(
            rows.to(dtype), timesteps, encoder_hidden_states=cond.to(dtype), class_labels=labels
        ).sample  # (k N, 6, S, S)
        return out.float()

    return predict


def low_res(image: torch.Tensor, size: int, noising: DDPM, noise_level: int, noise: torch.Tensor) -> LowRes:
    """`image` (N, 3, s, s) in [-1, 1] made stage II's condition: bilinear to (size, size), then noised to
    `noise_level` by the image-noising schedule (IFSuperResolutionPipeline's `preprocess` and `add_noise`)."""
    up = F.interpolate(image, (size, size), mode="bilinear", align_corners=True)  # (N, 3, size, size)
    return LowRes(noising.noise_to(up, noise_level, noise), noise_level)
