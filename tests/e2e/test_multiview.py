"""Multi-view anagrams through HTTP and a real worker on mnist-flow (tiny random checkpoints): three and four views,
each reduction, per-view arguments, the artifacts (one image per view, the animation) and the rules at the door."""

import io
from typing import Any

import httpx
import numpy as np
import pytest
import torch
from PIL import Image

from models.grid import make_grid
from models.views import make_view
from tests.e2e.test_generation_kinds import stack  # noqa: F401 (its stack: tiny random checkpoints)
from tests.helpers import artifact, decode, names, submit, succeeded

BASE = {"kind": "anagram", "model": "mnist-flow", "steps": 4, "n": 1, "seed": 5}
THREE = {"prompts": ["1", "7", "3"], "views": ["identity", "rotate_cw", "pixel_permute"]}
FOUR = {
    "prompts": ["1", "7", "3", "8"],
    "views": ["identity", "patch_permute", "jigsaw", "skew"],
    "view_args": [None, {"patch_size": 7, "seed": 2}, {"patch_size": 14, "seed": 1}, {"factor": -1.0}],
}


def viewed(image: np.ndarray, name: str, args: dict[str, Any] | None) -> np.ndarray:
    """A 28 x 28 image under the view as the service builds it for mnist-flow (its side, 28, as the base)."""
    return make_view(name, args, 28).view(torch.from_numpy(image.copy())[None]).numpy()[0]


def frames(gif: bytes) -> int:
    image = Image.open(io.BytesIO(gif))
    assert image.format == "GIF"
    return int(image.n_frames)


def job_pixels(client: httpx.Client, job: dict[str, Any]) -> bytes:
    return artifact(client, job, "image_0.png")


@pytest.mark.parametrize("reduction", ["mean", "sum", "alternate"])
@pytest.mark.parametrize("body", [THREE, FOUR], ids=["3 views", "4 views"])
def test_each_view_of_the_image_is_saved_and_animated(client: httpx.Client, body: dict[str, Any], reduction: str):
    job = succeeded(submit(client, {**BASE, **body, "reduction": reduction}))
    k = len(body["views"])
    assert job["result"] == {"seeds": [5], "views": body["views"], "reduction": reduction}  # no shorthand `view`
    assert names(job) == {"image_0.png", "animation.gif", *(f"view_{i}.png" for i in range(k))}
    image = decode(artifact(client, job, "image_0.png"))
    for i, (name, args) in enumerate(zip(body["views"], body.get("view_args", [None] * k), strict=True)):
        assert np.array_equal(decode(artifact(client, job, f"view_{i}.png")), viewed(image, name, args)), name
    assert frames(artifact(client, job, "animation.gif")) >= k  # each view held, and the moves between them


def test_the_reduction_and_the_arguments_change_the_image(client: httpx.Client):
    jobs = {r: succeeded(submit(client, {**BASE, **THREE, "reduction": r})) for r in ("mean", "sum", "alternate")}
    pixels = {r: job_pixels(client, job) for r, job in jobs.items()}
    assert len(set(pixels.values())) == 3
    other_seed = {**THREE, "view_args": [None, None, {"seed": 7}]}
    again = succeeded(submit(client, {**BASE, **other_seed}))
    assert job_pixels(client, again) != pixels["mean"]
    assert job_pixels(client, succeeded(submit(client, {**BASE, **THREE}))) == pixels["mean"]  # deterministic


def test_with_several_samples_a_view_is_a_row_of_them(client: httpx.Client):
    job = succeeded(submit(client, {**BASE, **THREE, "n": 2}))
    images = [decode(artifact(client, job, f"image_{i}.png")) for i in range(2)]
    for i, name in enumerate(THREE["views"]):
        row = torch.from_numpy(np.stack([viewed(image, name, None) for image in images]))[:, None]
        expected = make_grid(row, nrow=2)[0].numpy()
        got = decode(artifact(client, job, f"view_{i}.png"))
        assert got.shape == (32, 62) and np.array_equal(got, expected), name


def test_the_shorthand_view_and_explicit_views_make_the_same_image(client: httpx.Client):
    short = succeeded(submit(client, {**BASE, "prompts": ["6", "9"], "view": "rotate_180"}))
    long = succeeded(submit(client, {**BASE, "prompts": ["6", "9"], "views": ["identity", "rotate_180"]}))
    assert short["result"]["view"] == "rotate_180" and "view" not in long["result"]
    assert short["result"]["views"] == long["result"]["views"] == ["identity", "rotate_180"]
    assert job_pixels(client, short) == job_pixels(client, long)


CHECKED = [  # the kind's own rules: loc exactly where the rule breaks
    ({"prompts": ["1", "7", "3"]}, ["views"], "need `views`"),
    ({"prompts": ["1", "7"], "views": ["identity", "flip", "negate"]}, ["views"], "one view per prompt"),
    ({"prompts": ["1", "7"], "views": ["identity", "flip"], "view": "flip"}, ["view"], "not both"),
    ({"prompts": ["1", "7"], "view_args": [None, None, None]}, ["view_args"], "one entry per view"),
    ({**THREE, "view_args": [None, None]}, ["view_args"], "one entry per view"),
    ({"prompts": ["1", "7"], "view": "patch_permute", "view_args": [None, {"size": 4}]}, ["view_args", 1, "size"], ""),
    (
        {"prompts": ["1", "7"], "view": "patch_permute", "view_args": [None, {"patch_size": 5}]},
        ["view_args", 1, "patch_size"],
        "must divide the image side, 28",
    ),
    (
        {**THREE, "view_args": [None, None, {"seed": "x"}]},
        ["view_args", 2, "seed"],
        "valid integer",
    ),
    ({"prompts": ["1", "7"], "view": "skew", "view_args": [{}, {"factor": 9}]}, ["view_args", 1, "factor"], "4"),
    (
        {"prompts": ["1", "7"], "view": "inner_circle", "view_args": [None, {"radius": 0.6}]},
        ["view_args", 1, "radius"],
        "0.5",
    ),
    (
        {"prompts": ["1", "7"], "view": "jigsaw", "view_args": [None, {"patch_size": 0}]},
        ["view_args", 1, "patch_size"],
        "",
    ),
    (
        {"prompts": ["1", "7"], "view": "flip", "view_args": [None, {"seed": 1}]},
        ["view_args", 1, "seed"],
        "no arguments",
    ),
    ({"prompts": ["1", "7"], "view_args": [{"seed": 1}, None]}, ["view_args", 0, "seed"], "no arguments"),
]


@pytest.mark.parametrize(("extra", "loc", "says"), CHECKED)
def test_bad_views_and_view_args_are_refused_naming_the_view(client: httpx.Client, extra, loc, says):
    response = client.post("/v1/jobs", json={**BASE, **extra})
    assert response.status_code == 422, response.text
    error = response.json()["error"]
    assert error["details"][0]["loc"] == ["body", *loc] and says in error["message"]


@pytest.mark.parametrize(
    ("extra", "field"),
    [
        ({"prompts": ["1", "7", "3", "8", "2"], "views": ["identity"] * 5}, "prompts"),
        ({"prompts": ["1", "7"], "views": ["identity"]}, "views"),
        ({"prompts": ["1", "7"], "views": ["identity", "spin"]}, "views"),
        ({"prompts": ["1", "7"], "view_args": [None, {}, {}, {}, {}]}, "view_args"),
        ({"prompts": ["1", "7"], "view_args": [None, 3]}, "view_args"),
        ({"prompts": ["1", "7"], "reduction": "max"}, "reduction"),
    ],
)
def test_malformed_lists_are_refused_naming_the_field(client: httpx.Client, extra, field):
    response = client.post("/v1/jobs", json={**BASE, **extra})
    assert response.status_code == 422, response.text
    assert field in response.json()["error"]["details"][0]["loc"]
