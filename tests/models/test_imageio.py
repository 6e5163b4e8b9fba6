import io

import numpy as np
import pytest
import torch
from PIL import Image

from models.imageio import encode_gif, encode_png, resize, to_pil, to_tensor


def test_png_round_trip_to_1_over_255() -> None:
    x = torch.rand(3, 16, 12, generator=torch.Generator().manual_seed(0))
    img = Image.open(io.BytesIO(encode_png(x)))
    assert img.mode == "RGB" and img.size == (12, 16)
    y = to_tensor(img, 3)
    assert y.shape == (1, 3, 16, 12)
    assert (y[0] - x).abs().max().item() <= 0.5 / 255 + 1e-6  # rounding, not truncation


def test_to_pil_rounds_and_clips() -> None:
    x = torch.tensor([[[0.999, -0.5, 1.5, 0.5 / 255 + 1e-4]]])  # (1, 1, 4)
    img = to_pil(x)
    assert img.mode == "L"
    assert np.asarray(img).tolist() == [[255, 0, 255, 1]]


@pytest.mark.parametrize("mode", ["RGBA", "P", "LA", "CMYK", "1"])
def test_to_tensor_accepts_any_mode(mode: str) -> None:
    img = Image.new("RGB", (7, 5), (200, 100, 50)).convert(mode)
    for channels in (1, 3):
        x = to_tensor(img, channels)
        assert x.shape == (1, channels, 5, 7) and x.dtype == torch.float32
        assert 0.0 <= x.min().item() <= x.max().item() <= 1.0


def test_to_tensor_rescales_16_bit() -> None:
    img = Image.fromarray(np.full((4, 4), 65535 // 2, dtype=np.uint16))
    assert img.mode.startswith("I")
    x = to_tensor(img, 1)
    assert x.mean().item() == pytest.approx(0.5, abs=1e-4)


def test_to_tensor_puts_transparency_on_white() -> None:
    img = Image.new("RGBA", (3, 3), (0, 0, 0, 0))
    assert to_tensor(img, 3).min().item() == 1.0


def test_gif_has_one_frame_per_tensor() -> None:
    frames = [torch.full((1, 8, 8), v) for v in (0.0, 0.3, 0.6, 1.0)]
    img = Image.open(io.BytesIO(encode_gif(frames, duration_ms=50)))
    assert img.format == "GIF"
    assert getattr(img, "n_frames", 1) == 4


def test_resize_shape_and_constant() -> None:
    x = torch.full((2, 3, 32, 32), 0.25)
    y = resize(x, (8, 12))
    assert y.shape == (2, 3, 8, 12)
    torch.testing.assert_close(y, torch.full_like(y, 0.25))
