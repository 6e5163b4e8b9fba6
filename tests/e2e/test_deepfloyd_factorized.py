"""Hybrids on `deepfloyd-if` at both stages (docs/kinds.md, "Factorized hybrids"): a colour hybrid held to a
reference image (the paper's colourisation), and stage II under the hybrid's own rule, through HTTP and a real
`deepfloyd` worker on the tiny random IF of tests/tiny_if.py (16 px, then 32 px), set up as tests/e2e/test_deepfloyd.py
does it. Random weights draw nothing; what must hold for any weights is that the result's grayscale is the
reference's at each stage's side (`clip_denoised` clips both stages' estimates, so that most pixels leave the PNG
unclipped), and that a hybrid of one prompt twice is that prompt's sample."""

import numpy as np
import pytest
import torch

from models.factorize import Color
from models.imageio import resize
from tests.e2e.test_deepfloyd import MODEL, PHOTO, PHOTO_PIXELS, SKULL, photo, stack, tiny_if  # noqa: F401 (its stack)
from tests.e2e.test_factorized import held_groups
from tests.helpers import artifact, decode, names, submit, succeeded
from tests.tiny_if import STAGE1_SIZE, STAGE2_SIZE

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


def test_a_hybrid_of_one_prompt_twice_upsamples_as_that_prompts_sample(client):
    """Stage II carries the hybrid's rule (worker/hybrid.py): over one prompt twice the components sum to that
    prompt's CFG estimate, so both stages make a sample job's pixels, up to float rounding; were stage II's guidance
    not the hybrid's, upsampled_0.png would be unconditional and differ."""
    common = {"model": MODEL, "seed": 5, "stride": 100, "guidance_scale": 7.0, "upsample": True}
    hybrid = succeeded(submit(client, {**common, "kind": "hybrid", "prompts": [SKULL, SKULL]}))
    sample = succeeded(submit(client, {**common, "kind": "sample", "prompt": SKULL, "n": 1}))
    assert hybrid["result"]["upsampled"] == ["upsampled_0.png"]
    for name in ("image_0.png", "upsampled_0.png"):
        ours, theirs = (decode(artifact(client, job, name)) for job in (hybrid, sample))
        assert np.abs(ours - theirs).max() <= 2 / 255, name


def test_stage_two_holds_the_references_grayscale_at_its_own_side(client):
    """The held component is held at stage II too, to the reference read at stage II's side (32 px)."""
    held = succeeded(submit(client, {**BODY, "prompts": [SKULL], "image": photo(client), "upsample": True}))
    assert names(held) == {"image_0.png", "upsampled_0.png"}
    reference = torch.from_numpy(PHOTO_PIXELS / 255).float().permute(2, 0, 1)[None]
    target = gray(resize(reference, (STAGE2_SIZE, STAGE2_SIZE)).clamp(0, 1)[0].permute(1, 2, 0).numpy())
    out = decode(artifact(client, held, "upsampled_0.png"))
    assert out.shape == (STAGE2_SIZE, STAGE2_SIZE, 3)
    exact, broken = held_groups(out.reshape(-1, 3), target)
    assert broken == 0 and exact >= 200, (exact, broken)  # of 1024 pixels; the rest clipped
