"""Gaussian low-pass and high-pass filters, numerically matching torchvision's gaussian_blur."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


def default_blur_sigma(kernel_size: int) -> float:
    """torchvision's default sigma for a kernel size (the OpenCV getGaussianKernel rule)."""
    return 0.3 * ((kernel_size - 1) * 0.5 - 1) + 0.8


def _check_args(kernel_size: int, sigma: float) -> None:
    if kernel_size <= 0 or kernel_size % 2 == 0:
        raise ValueError(f"kernel_size must be a positive odd integer, got {kernel_size}")
    if not sigma > 0:
        raise ValueError(f"sigma must be positive, got {sigma}")


def gaussian_kernel1d(kernel_size: int, sigma: float, dtype: torch.dtype = torch.float32) -> Tensor:
    """Normalised samples of exp(-x^2 / (2 sigma^2)) at x = -(k-1)/2 .. (k-1)/2."""
    _check_args(kernel_size, sigma)
    half = (kernel_size - 1) * 0.5
    x = torch.linspace(-half, half, steps=kernel_size, dtype=dtype)  # (k,)
    pdf = torch.exp(-0.5 * (x / sigma).pow(2))
    return pdf / pdf.sum()  # (k,)


def _pad_axis(x: Tensor, pad: int, dim: int) -> Tensor:
    """Reflect-pad one spatial axis; 'replicate' where the image is too small to reflect (pad >= size)."""
    mode = "reflect" if pad < x.shape[dim] else "replicate"
    widths = (pad, pad, 0, 0) if dim == -1 else (0, 0, pad, pad)
    return F.pad(x, widths, mode=mode)


def gaussian_blur(x: Tensor, kernel_size: int, sigma: float) -> Tensor:
    """Blur (B, C, H, W) floats with a separable Gaussian, each channel on its own.

    Matches torchvision.transforms.functional.gaussian_blur (reflect padding, same kernel) up to
    float rounding. torchvision fails when kernel_size // 2 >= H or W; here that axis is padded
    with 'replicate' instead, so e.g. a 33 kernel works on a 28x28 image.
    """
    _check_args(kernel_size, sigma)
    if x.ndim != 4:
        raise ValueError(f"expected (B, C, H, W), got shape {tuple(x.shape)}")
    if not x.is_floating_point():
        raise ValueError(f"expected a floating point tensor, got {x.dtype}")
    channels, pad = x.shape[1], kernel_size // 2
    k = gaussian_kernel1d(kernel_size, sigma, dtype=x.dtype).to(x.device)  # (k,)
    x = _pad_axis(_pad_axis(x, pad, dim=-1), pad, dim=-2)  # (B, C, H + 2p, W + 2p)
    x = F.conv2d(x, k.view(1, 1, 1, -1).expand(channels, -1, -1, -1), groups=channels)  # (B, C, H + 2p, W)
    return F.conv2d(x, k.view(1, 1, -1, 1).expand(channels, -1, -1, -1), groups=channels)  # (B, C, H, W)


lowpass = gaussian_blur


def highpass(x: Tensor, kernel_size: int, sigma: float) -> Tensor:
    """What the Gaussian removes: x - lowpass(x), so lowpass + highpass == x."""
    return x - gaussian_blur(x, kernel_size, sigma)  # (B, C, H, W)
