"""Conversions between image tensors and PIL images or encoded bytes (in memory, no file I/O)."""

from __future__ import annotations

import io

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import Tensor

_HIGH_BIT_MODES = {"I", "I;16", "I;16L", "I;16B", "I;16N"}


def _to_rgb_or_l(img: Image.Image, mode: str) -> np.ndarray:
    """Pixels as float32 in [0, 1], (H, W) for mode 'L' or (H, W, 3) for 'RGB'."""
    if img.mode in _HIGH_BIT_MODES:
        # Pillow's own conversion clips these to 0..255 rather than rescaling. "I" is taken as 16-bit
        # too: older Pillow opens 16-bit PNGs in that mode.
        gray = np.asarray(img, dtype=np.float32).clip(0, 65535) / 65535.0  # (H, W)
        return gray if mode == "L" else np.repeat(gray[..., None], 3, axis=-1)
    if img.mode in ("RGBA", "LA", "PA") or (img.mode == "P" and "transparency" in img.info):
        # Flatten transparency onto white, the way the image is usually seen, instead of exposing
        # whatever colour lies under transparent pixels (often black).
        white = Image.new("RGBA", img.size, (255, 255, 255, 255))
        img = Image.alpha_composite(white, img.convert("RGBA"))
    return np.asarray(img.convert(mode), dtype=np.float32) / 255.0


def to_tensor(img: Image.Image, channels: int) -> Tensor:
    """A PIL image of any mode as a (1, C, H, W) float32 tensor in [0, 1]; C=1 is luma, C=3 is RGB."""
    if channels not in (1, 3):
        raise ValueError(f"channels must be 1 or 3, got {channels}")
    arr = _to_rgb_or_l(img, "L" if channels == 1 else "RGB")
    x = torch.from_numpy(np.ascontiguousarray(arr))
    x = x[None] if channels == 1 else x.permute(2, 0, 1)  # (C, H, W)
    return x.unsqueeze(0)  # (1, C, H, W)


def to_pil(x: Tensor) -> Image.Image:
    """A (C, H, W) tensor in [0, 1] as a PIL image: clipped, rounded to uint8, mode 'L' or 'RGB'."""
    if x.ndim != 3 or x.shape[0] not in (1, 3):
        raise ValueError(f"expected (C, H, W) with C in (1, 3), got shape {tuple(x.shape)}")
    x = torch.nan_to_num(x.detach().to("cpu", torch.float32), nan=0.0)
    arr = (x.clamp(0.0, 1.0) * 255.0).round().to(torch.uint8).numpy()  # (C, H, W)
    return Image.fromarray(arr[0] if arr.shape[0] == 1 else np.ascontiguousarray(arr.transpose(1, 2, 0)))


def encode_png(x: Tensor) -> bytes:
    """A (C, H, W) tensor in [0, 1] as PNG bytes."""
    buf = io.BytesIO()
    to_pil(x).save(buf, format="PNG")
    return buf.getvalue()


def encode_gif(frames: list[Tensor], duration_ms: int = 100, loop: int = 0) -> bytes:
    """(C, H, W) frames in [0, 1] as an animated GIF; loop=0 repeats forever.

    GIF is paletted (256 colours per frame), and Pillow merges identical consecutive frames into
    one longer frame, so the decoded frame count can be lower than len(frames).
    """
    if not frames:
        raise ValueError("need at least one frame")
    first, *rest = (to_pil(f) for f in frames)
    buf = io.BytesIO()
    first.save(buf, format="GIF", save_all=True, append_images=rest, duration=duration_ms, loop=loop)
    return buf.getvalue()


def resize(x: Tensor, size: tuple[int, int]) -> Tensor:
    """Resize (B, C, H, W) to size = (H', W') with antialiased bicubic interpolation.

    Bicubic can overshoot the input range slightly; values are not clipped here (to_pil clips).
    """
    if x.ndim != 4:
        raise ValueError(f"expected (B, C, H, W), got shape {tuple(x.shape)}")
    return F.interpolate(x, size=size, mode="bicubic", align_corners=False, antialias=True)  # (B, C, H', W')
