"""The door's image checks: limits read from the header, and Pillow's own bomb check set to the same limit."""

import io
from collections.abc import Iterator

import numpy as np
import pytest
from PIL import Image

from core.errors import InvalidRequest, PayloadTooLarge
from core.images import ImageLimits, guard_decoder, probe_image
from tests.helpers import png


@pytest.fixture
def pillow_limit() -> Iterator[None]:
    before = Image.MAX_IMAGE_PIXELS
    yield
    Image.MAX_IMAGE_PIXELS = before


def test_pillow_refuses_to_decode_past_the_services_limit(pillow_limit: None) -> None:
    guard_decoder(ImageLimits(max_pixels=1000, max_side=100))
    data = png(np.zeros((50, 50), np.uint8))  # 2,500 pixels: past twice the limit
    with pytest.raises(Image.DecompressionBombError):
        Image.open(io.BytesIO(data)).load()


@pytest.mark.parametrize(
    ("shape", "words"),
    [((40, 40), "more than the limit of 1000"), ((1, 200), "a side may be at most 100")],
)
def test_probe_refuses_too_many_pixels_or_too_long_a_side(shape: tuple[int, int], words: str) -> None:
    data = png(np.zeros(shape, np.uint8))
    limits = ImageLimits(max_pixels=1000, max_side=100)
    with pytest.raises(PayloadTooLarge, match=words):
        probe_image(data, limits)
    with pytest.raises(InvalidRequest, match=words):
        probe_image(data, limits, ["image", "base64"])
    assert probe_image(png(np.zeros((10, 100), np.uint8)), limits).width == 100
