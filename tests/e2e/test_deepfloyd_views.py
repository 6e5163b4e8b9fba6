"""Multi-view anagrams on `deepfloyd-if` with stage II (docs/kinds.md, "Multi-view anagrams"): through HTTP and a real
`deepfloyd` worker on the tiny random IF of tests/tiny_if.py (16 px, then 32 px), set up as tests/e2e/test_deepfloyd.py
does it. Random weights draw nothing; what must hold for any weights is that every artifact is there and that each
view's image, at both stages, is that stage's image under the view: at stage II, pixel_permute moves stage I's
permutation's 2 x 2 blocks."""

import numpy as np
import pytest
import torch

from models.views import make_view
from tests.e2e.test_deepfloyd import CAMPFIRE, MODEL, OLD_MAN, SKULL, stack, tiny_if  # noqa: F401 (its stack)
from tests.helpers import artifact, decode, names, submit, succeeded
from tests.tiny_if import STAGE1_SIZE, STAGE2_SIZE

pytestmark = pytest.mark.slow
VIEWS = ["identity", "negate", "pixel_permute"]
ARGS = [None, None, {"seed": 3}]
BODY = {"kind": "anagram", "model": MODEL, "prompts": [OLD_MAN, CAMPFIRE, SKULL], "views": VIEWS, "view_args": ARGS}


def under(pixels: np.ndarray, k: int) -> np.ndarray:
    """(H, W, 3) in [0, 1] under view k, its arguments given at stage I's side; negate in IF's value space [-1, 1]:
    1 - u. (The other views move pixels, which commutes with the move to [0, 1].)"""
    if VIEWS[k] == "negate":
        return 1 - pixels
    x = torch.from_numpy(np.ascontiguousarray(pixels.transpose(2, 0, 1)))[None]
    return make_view(VIEWS[k], ARGS[k], STAGE1_SIZE).view(x)[0].numpy().transpose(1, 2, 0)


def assert_views(client, job: dict, image: str, prefix: str) -> None:
    pixels = decode(artifact(client, job, image))
    for k in range(len(VIEWS)):
        got, expected = decode(artifact(client, job, f"{prefix}{k}.png")), under(pixels, k)
        if VIEWS[k] == "negate":  # 1 - u, quantised on its own: at most one level apart
            assert np.abs(got - expected).max() <= 1 / 255 + 1e-6
        else:
            assert np.array_equal(got, expected), VIEWS[k]


@pytest.mark.parametrize("reduction", ["mean", "alternate"])
def test_a_three_view_anagram_is_upsampled_under_the_same_views(client, reduction):
    job = succeeded(submit(client, {**BODY, "reduction": reduction, "seed": 4, "stride": 100, "upsample": True}))
    views = [f"view_{k}.png" for k in range(3)]
    upsampled = [f"upsampled_view_{k}.png" for k in range(3)]
    assert names(job) == {"image_0.png", "animation.gif", "upsampled_0.png", *views, *upsampled}
    assert job["result"]["views"] == VIEWS and job["result"]["reduction"] == reduction
    assert job["result"]["upsampled"] == ["upsampled_0.png"] and job["result"]["upsampled_views"] == upsampled
    assert decode(artifact(client, job, "image_0.png")).shape == (STAGE1_SIZE, STAGE1_SIZE, 3)
    assert decode(artifact(client, job, "upsampled_0.png")).shape == (STAGE2_SIZE, STAGE2_SIZE, 3)
    assert job["progress"]["stage"] == "upsampling"
    assert_views(client, job, "image_0.png", "view_")
    assert_views(client, job, "upsampled_0.png", "upsampled_view_")
    again = succeeded(submit(client, {**BODY, "reduction": reduction, "seed": 4, "stride": 100, "upsample": True}))
    assert artifact(client, again, "upsampled_0.png") == artifact(client, job, "upsampled_0.png")


def test_the_stage_two_pixel_permutation_moves_stage_ones_blocks(client):
    """upsampled_view_2.png is stage I's 16 px permutation moving 2 x 2 blocks of the 32 px image, not a 32 px one."""
    job = succeeded(submit(client, {**BODY, "seed": 6, "stride": 100, "upsample": True}))
    up = decode(artifact(client, job, "upsampled_0.png"))
    blocks = up.reshape(STAGE1_SIZE, 2, STAGE1_SIZE, 2, 3).transpose(0, 2, 1, 3, 4).reshape(-1, 2, 2, 3)
    index = torch.arange(STAGE1_SIZE**2).double().view(1, 1, STAGE1_SIZE, STAGE1_SIZE)
    source = make_view("pixel_permute", {"seed": 3}, STAGE1_SIZE).view(index).flatten().long().numpy()
    moved = blocks[source].reshape(STAGE1_SIZE, STAGE1_SIZE, 2, 2, 3).transpose(0, 2, 1, 3, 4)
    assert np.array_equal(decode(artifact(client, job, "upsampled_view_2.png")), moved.reshape(up.shape))
    other = make_view("pixel_permute", {"seed": 3}, STAGE2_SIZE)  # a permutation of the 32 px image's own pixels
    as_tensor = torch.from_numpy(np.ascontiguousarray(up.transpose(2, 0, 1)))[None]
    assert not np.array_equal(moved.reshape(up.shape), other.view(as_tensor)[0].numpy().transpose(1, 2, 0))


def test_a_bad_patch_size_on_if_names_the_view_and_stage_ones_side(client):
    body = {"kind": "anagram", "model": MODEL, "prompts": [OLD_MAN, CAMPFIRE], "view": "jigsaw"}
    response = client.post("/v1/jobs", json={**body, "view_args": [None, {"patch_size": 3}]})
    assert response.status_code == 422, response.text
    error = response.json()["error"]
    assert error["details"][0]["loc"] == ["body", "view_args", 1, "patch_size"]
    assert f"image side, {STAGE1_SIZE}" in error["message"]
