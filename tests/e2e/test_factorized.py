"""Factorized hybrids through HTTP and a real worker (docs/kinds.md, "Factorized hybrids"): every decomposition the
MNIST models allow, the two-band default unchanged, and the rules at the door. Tiny random checkpoints. Colour
(3 channels) runs on DeepFloyd IF: tests/e2e/test_deepfloyd.py."""

import pytest

from tests.e2e.test_api_errors import error_of
from tests.e2e.test_generation_kinds import stack  # noqa: F401 (its stack)
from tests.helpers import artifact, submit, succeeded

BASE = {"kind": "hybrid", "model": "mnist-flow", "n": 1, "seed": 2, "steps": 4}


@pytest.mark.parametrize(
    "extra",
    [
        {"prompts": ["1", "8", "0"]},
        {"prompts": ["1", "8", "0"], "sigmas": [3.0, 0.5]},
        {"prompts": ["1", "8"], "decomposition": "motion", "motion_length": 7},
        {"prompts": ["1", "8"], "decomposition": "scale", "scale_factor": 7},
    ],
    ids=["three-bands", "three-bands-sigmas", "motion", "scale"],
)
def test_every_decomposition_makes_its_image(client, extra):
    job = succeeded(submit(client, {**BASE, **extra}))
    assert job["result"]["decomposition"] == extra.get("decomposition", "frequency")
    assert job["progress"]["total"] == 4
    assert {a["name"] for a in job["artifacts"]} == {"image_0.png"}


def test_two_bands_given_as_sigmas_are_the_default_hybrid(client):
    plain = succeeded(submit(client, {**BASE, "prompts": ["1", "8"], "sigma": 2.0}))
    banded = succeeded(submit(client, {**BASE, "prompts": ["1", "8"], "sigmas": [2.0]}))
    assert artifact(client, plain, "image_0.png") == artifact(client, banded, "image_0.png")


@pytest.mark.parametrize(
    ("extra", "loc", "words"),
    [
        ({"prompts": ["1", "8"], "decomposition": "color"}, "decomposition", "color needs 3 channels"),
        ({"prompts": ["1", "8", "0"], "decomposition": "motion"}, "prompts", "2 components: 2 prompts"),
        ({"prompts": ["1", "8", "0"], "sigmas": [2.0]}, "sigmas", "3 bands need 2 sigma(s)"),
        ({"prompts": ["1", "8", "0"], "sigmas": [0.5, 3.0]}, "sigmas", "must be descending"),
        ({"prompts": ["1", "8"], "decomposition": "scale", "scale_factor": 5}, "scale_factor", "must divide"),
        ({"prompts": ["1", "8"], "decomposition": "motion", "sigmas": [2.0]}, "sigmas", "only a frequency"),
        ({"prompts": ["1", "8"], "motion_length": 8}, "motion_length", "must be odd"),
        ({"prompts": ["1", "8", "0", "2"]}, "prompts", "at most 3"),
    ],
)
def test_a_decomposition_that_cannot_work_is_a_422(client, extra, loc, words):
    error = error_of(client.post("/v1/jobs", json={**BASE, **extra}), 422)
    assert loc in [d["loc"][-1] for d in error["details"]], error
    assert words in error["message"] + str(error["details"]), error
