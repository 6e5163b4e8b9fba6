"""A colour hybrid held to a reference image on `deepfloyd-if` (docs/kinds.md, "Reference images (inverse
problems)"): the paper's colourisation, through HTTP and a real `deepfloyd` worker on the tiny random IF of
tests/tiny_if.py, set up as tests/e2e/test_deepfloyd.py does it. Random weights draw nothing; what must hold for any
weights is that the result's grayscale is the reference's."""

import numpy as np
import pytest
import torch

from models.factorize import Color
from tests.e2e.test_deepfloyd import MODEL, PHOTO, PHOTO_PIXELS, SKULL, photo, stack, tiny_if  # noqa: F401 (its stack)
from tests.e2e.test_factorized import held_groups
from tests.helpers import artifact, decode, names, submit, succeeded
from tests.tiny_if import STAGE1_SIZE

pytestmark = pytest.mark.slow
BODY = {"kind": "hybrid", "model": MODEL, "decomposition": "color", "seed": 2, "stride": 100, "clip_denoised": True}


def gray(pixels: np.ndarray) -> np.ndarray:
    """(H, W, 3) in [0, 1] to its grayscale component's value per pixel (H W,), by models/factorize.py."""
    x = torch.from_numpy(np.ascontiguousarray(pixels.transpose(2, 0, 1)))[None]
    return Color()(x)[0][0, 0].flatten().numpy()


def test_a_colour_hybrid_keeps_the_reference_images_grayscale(client):
    """`clip_denoised` keeps the random network's estimates in range, so that most pixels leave the PNG unclipped."""
    held = succeeded(submit(client, {**BODY, "prompts": [SKULL], "image": photo(client), "n": 2}))
    assert held["result"] == {"seeds": [2, 3], "decomposition": "color", "hold": 0}
    assert names(held) == {"image_0.png", "image_1.png", "grid.png"}
    target = gray(PHOTO_PIXELS / 255)
    for i in range(2):
        out = decode(artifact(client, held, f"image_{i}.png"))
        assert out.shape == (STAGE1_SIZE, STAGE1_SIZE, 3)
        exact, broken = held_groups(out.reshape(-1, 3), target)
        assert broken == 0 and exact >= 10, (exact, broken)
        assert np.abs(out - PHOTO_PIXELS / 255).max() > 0.2  # the colour is generated, not the reference's
    free = succeeded(submit(client, {**BODY, "prompts": [PHOTO, SKULL], "n": 1}))
    assert held_groups(decode(artifact(client, free, "image_0.png")).reshape(-1, 3), target)[1] > 20  # can fail
