"""Every new anagram view through HTTP and a real worker on mnist-flow (tiny random checkpoints): the job succeeds
and saves the image, one image per view (the first the identity: the image itself; the second the image under the
view) and the animation between them."""

import httpx
import numpy as np
import pytest
import torch

from models.views import VIEWS
from tests.e2e.test_generation_kinds import stack  # noqa: F401 (its stack: tiny random checkpoints)
from tests.helpers import artifact, decode, names, submit, succeeded

NEW = ["rotate_cw", "rotate_ccw", "transpose", "skew", "patch_permute", "pixel_permute", "jigsaw"]
NEW += ["inner_circle", "square_hinge"]


@pytest.mark.parametrize("view", NEW)
def test_an_anagram_under_each_new_view_saves_its_image_and_its_views(client: httpx.Client, view: str) -> None:
    body = {"kind": "anagram", "model": "mnist-flow", "prompts": ["6", "9"], "view": view, "steps": 4, "n": 1}
    job = succeeded(submit(client, {**body, "seed": 3}))
    assert job["result"]["view"] == view and job["result"]["views"] == ["identity", view]
    assert names(job) == {"image_0.png", "view_0.png", "view_1.png", "animation.gif"}
    upright, first, viewed = (decode(artifact(client, job, n)) for n in ("image_0.png", "view_0.png", "view_1.png"))
    assert upright.shape == viewed.shape == (28, 28) and np.array_equal(first, upright)
    expected = VIEWS[view].view(torch.from_numpy(upright.copy())[None]).numpy()[0]
    assert np.array_equal(viewed, expected)  # a permutation of pixels commutes with the PNG's quantisation
