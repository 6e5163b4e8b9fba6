"""Making a trained UNet fast to sample from, without changing what it computes (up to float rounding).

- `fold_batchnorm`: in eval mode a BatchNorm after a convolution is an affine map per channel, so it folds into the
  convolution's weights and bias (torch.nn.utils.fusion), saving a pass over every activation.
- channels-last: oneDNN's convolutions are faster on CPU in NHWC.
- `gelu_in_place`: a GELU whose input is its Sequential's own intermediate (a convolution's or a pooling's output)
  overwrites it instead of allocating a new tensor: the same function, bit for bit, in about half the time on a CPU
  (the GELUs were a fifth of a sampling step; 1.04x a step in all).
- `chunked`: a CPU works best on batches that fit its caches; the rows of one step (CFG: B images under 2 conditions)
  in passes of about CPU_CHUNK rows beat one big pass (measured in bench/sampling.py). On CUDA, large batches are
  best: no chunks.
- `torch.compile` (inductor) fuses the GELUs and the per-sample modulation into the convolutions' neighbours. It costs
  tens of seconds per batch shape, once per worker process, so it is an option (`compile=True`).
  Inductor's `freezing` mode is NOT used: on torch 2.13 (CPU) it changed this UNet's outputs by up to 0.3.
"""

import copy
from collections.abc import Callable
from typing import TypeVar

import torch
from torch import nn
from torch.nn.utils.fusion import fuse_conv_bn_eval

from models.guidance import Predict
from models.predictors import branches
from models.unet import set_memory_format

M = TypeVar("M", bound=nn.Module)

CPU_CHUNK = 48  # rows (images x conditions) per forward pass on a CPU: bench/sampling.py put 48 ahead of 24 in 5 of 6
# runs (by 0-12 %) and 100 and 200 rows behind both


def fold_batchnorm(net: M) -> M:
    """A copy of `net` in eval mode with every (Conv2d | ConvTranspose2d, BatchNorm2d) pair of a Sequential fused."""
    folded = copy.deepcopy(net).eval()
    for module in folded.modules():
        if not isinstance(module, nn.Sequential):
            continue
        for i in range(len(module) - 1):
            conv, bn = module[i], module[i + 1]
            if isinstance(conv, nn.Conv2d | nn.ConvTranspose2d) and isinstance(bn, nn.BatchNorm2d):
                module[i] = fuse_conv_bn_eval(conv, bn, transpose=isinstance(conv, nn.ConvTranspose2d))
                module[i + 1] = nn.Identity()
    return folded


class InPlaceGELU(nn.GELU):
    """nn.GELU computed in place when no gradient is recorded (inference); as nn.GELU otherwise."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if torch.is_grad_enabled() and x.requires_grad:
            return super().forward(x)
        out: torch.Tensor = torch.ops.aten.gelu_(x, approximate=self.approximate)
        return out


def gelu_in_place(net: M) -> M:
    """`net`, changed in place: every GELU that follows a layer of its own Sequential made an InPlaceGELU. What it
    overwrites is that layer's fresh output, which nothing else reads. A GELU first in its Sequential, or behind
    Identity layers only, would overwrite the Sequential's input: it is left as it is."""
    for module in net.modules():
        if not isinstance(module, nn.Sequential):
            continue
        fresh = False  # has a layer before this one made a new tensor?
        for i, layer in enumerate(module):
            if type(layer) is nn.GELU and fresh:
                module[i] = InPlaceGELU(approximate=layer.approximate)
            fresh = fresh or not isinstance(layer, nn.Identity)
    return net


def for_inference(net: M, device: torch.device) -> M:
    """The network as a sampling worker should hold it: eval, BatchNorm folded, GELUs in place, channels-last on a
    CPU."""
    fast = gelu_in_place(fold_batchnorm(net)).to(device)
    if device.type == "cpu":
        set_memory_format(fast, torch.channels_last)
    return fast


def chunked(predict: Predict, size: int | None) -> Predict:
    """`predict` run on at most `size` rows (images x conditions) at a time, at least one image with all its
    conditions (None: all at once); same outputs, better cache use."""
    if size is None:
        return predict

    def run(x: torch.Tensor, t: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        n, k = x.shape[0], branches(x, cond)
        step = max(1, size // k)  # images per pass
        if n <= step:
            return predict(x, t, cond)
        conds = cond.unflatten(0, (k, n))  # (k, n, ...)
        parts = [
            predict(x[i : i + step], t[i : i + step], conds[:, i : i + step].flatten(0, 1)).unflatten(0, (k, -1))
            for i in range(0, n, step)
        ]  # each (k, step, C, H, W)
        return torch.cat(parts, dim=1).flatten(0, 1)  # (k n, C, H, W)

    return run


def chunk_size(device: torch.device) -> int | None:
    return CPU_CHUNK if device.type == "cpu" else None


def compiled(predict: Predict) -> Predict:
    """`predict` under torch.compile (shapes static: one compile per batch shape, reused after)."""
    fn: Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor] = torch.compile(predict, dynamic=False)
    return fn
