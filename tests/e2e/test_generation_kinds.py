"""Every loop kind through HTTP and a real worker, on tiny random checkpoints saved and loaded the real way.

Random weights make no digits; what is checked is what must hold for any weights: shapes, artifacts, determinism,
progress, the inpainting invariant, and the rules at the door.
"""

import io
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from core.kinds.img2img import course_starts
from models.datasets import mnist_5k
from models.unet import CS180UNet
from tests.helpers import Stack, artifact, decode, names, png, running_stack, submit, succeeded, wait_until

DIGIT = {"dataset": "mnist-5k", "index": 7}


def save_tiny_checkpoints(root: Path) -> None:
    torch.manual_seed(0)  # test-only weights; the service itself never touches the global RNG
    CS180UNet(hidden=8).save_pretrained(root / "mnist-denoiser")
    CS180UNet(hidden=8, time_conditioned=True, num_classes=10).save_pretrained(root / "mnist-ddpm")
    CS180UNet(hidden=8, time_conditioned=True, num_classes=10).save_pretrained(root / "mnist-flow")


@pytest.fixture(scope="module")
def stack(redis_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    root = tmp_path_factory.mktemp("checkpoints")
    save_tiny_checkpoints(root)
    with running_stack(redis_url, tmp_path_factory.mktemp("stack"), CHECKPOINTS_DIR=str(root)) as s:
        yield s


def test_models_are_available_with_their_capabilities(client):
    models = {m["id"]: m for m in client.get("/v1/models").json()["models"]}
    assert models["mnist-ddpm"]["available"] and models["mnist-ddpm"]["reason"] is None
    assert {"sample", "img2img", "inpaint", "anagram", "hybrid", "denoise.iterative"} <= set(
        models["mnist-flow"]["capabilities"]
    )
    assert "sample" not in models["mnist-denoiser"]["capabilities"]
    assert models["mnist-ddpm"]["classes"] == [str(d) for d in range(10)]


@pytest.mark.parametrize(("model", "schedule"), [("mnist-ddpm", {"stride": 50}), ("mnist-flow", {"steps": 6})])
def test_sample_with_frames_is_deterministic(client, model, schedule):
    body = {"kind": "sample", "model": model, "prompt": "7", "n": 3, "seed": 4, "frames": True, **schedule}
    job = succeeded(submit(client, body))
    assert names(job) == {"image_0.png", "image_1.png", "image_2.png", "grid.png", "frames.gif"}
    assert job["params"]["guidance_scale"] == 5.0
    assert job["progress"]["step"] == job["progress"]["total"] == 6  # 250, 200, ..., 0 then clean; or 6 Euler steps
    assert decode(artifact(client, job, "image_0.png")).shape == (28, 28)
    gif = Image.open(io.BytesIO(artifact(client, job, "frames.gif")))
    assert gif.n_frames >= 2
    again = succeeded(submit(client, body))
    assert artifact(client, job, "grid.png") == artifact(client, again, "grid.png")
    alone = succeeded(submit(client, {**body, "n": 1, "seed": 5, "frames": False}))  # sample 1 of seed 4 is seed 5's 0
    assert artifact(client, alone, "image_0.png") == artifact(client, job, "image_1.png")


def test_unconditional_and_class_label_samples(client):
    job = succeeded(submit(client, {"kind": "sample", "model": "mnist-ddpm", "n": 2, "class_label": 3, "stride": 100}))
    assert job["params"]["class_label"] == 3
    succeeded(submit(client, {"kind": "sample", "model": "mnist-flow", "n": 1, "steps": 3}))


def test_img2img_one_output_per_i_start(client):
    body = {"kind": "img2img", "model": "mnist-ddpm", "image": DIGIT, "i_start": [1, 3], "steps": 6, "seed": 1}
    job = succeeded(submit(client, body))
    assert names(job) == {"image_0.png", "image_1.png", "grid.png"}
    assert job["result"]["i_start"] == [1, 3]
    assert job["progress"]["total"] == (6 - 1) + (6 - 3)


def test_img2img_defaults_to_the_course_starts_at_the_same_fractions_of_the_run(client):
    assert course_starts(33) == [1, 3, 5, 7, 10, 20]  # the course's list at its own fractions
    job = succeeded(submit(client, {"kind": "img2img", "model": "mnist-ddpm", "image": DIGIT, "seed": 1}))
    assert job["params"]["i_start"] == [9, 27, 45, 64, 91, 182]  # of 300 steps, not six starts from pure noise
    assert names(job) == {f"image_{k}.png" for k in range(6)} | {"grid.png"}
    job = succeeded(submit(client, {"kind": "img2img", "model": "mnist-flow", "image": DIGIT, "steps": 6, "seed": 1}))
    assert job["params"]["i_start"] == job["result"]["i_start"] == [0, 1, 2, 4]


def test_img2img_resizes_an_input_of_another_size_and_says_so(client):
    upload = client.post(
        "/v1/uploads", content=png(np.full((56, 40), 200, np.uint8)), headers={"Content-Type": "image/png"}
    ).json()
    job = succeeded(
        submit(
            client,
            {"kind": "img2img", "model": "mnist-flow", "image": {"upload_id": upload["id"]}, "i_start": 2, "steps": 4},
        )
    )
    assert job["result"]["image_resized_from"] == [56, 40]
    assert decode(artifact(client, job, "image_0.png")).shape == (28, 28)


def test_inpainting_keeps_every_unmasked_pixel_exactly(client):
    mask = np.zeros((28, 28), np.uint8)
    mask[8:20, 8:20] = 255
    upload = client.post("/v1/uploads", content=png(mask), headers={"Content-Type": "image/png"}).json()
    for model, schedule in (("mnist-ddpm", {"stride": 50}), ("mnist-flow", {"steps": 5})):
        job = succeeded(
            submit(
                client,
                {
                    "kind": "inpaint",
                    "model": model,
                    "image": DIGIT,
                    "n": 2,
                    "prompt": "1",
                    "mask": {"upload_id": upload["id"]},
                    **schedule,
                },
            )
        )
        original = mnist_5k().images[7] / 255
        for i in range(2):
            out = decode(artifact(client, job, f"image_{i}.png"))
            assert np.array_equal(out[mask == 0], original[mask == 0])
            assert not np.array_equal(out[mask > 0], original[mask > 0])
        assert job["result"]["masked_fraction"] == pytest.approx(144 / 784, abs=1e-3)


def test_anagram_and_hybrid(client):
    job = succeeded(
        submit(
            client,
            {
                "kind": "anagram",
                "model": "mnist-ddpm",
                "prompts": ["6", "9"],
                "view": "rotate_180",
                "stride": 100,
                "seed": 2,
            },
        )
    )
    assert names(job) == {"image_0.png", "view_0.png", "view_1.png", "animation.gif"}
    upright, turned = (decode(artifact(client, job, n)) for n in ("image_0.png", "view_1.png"))
    assert np.array_equal(np.rot90(upright, 2), turned)
    job = succeeded(
        submit(client, {"kind": "hybrid", "model": "mnist-flow", "prompts": ["1", "8"], "steps": 4, "n": 2})
    )
    assert names(job) == {"image_0.png", "image_1.png", "grid.png"}
    assert job["params"]["kernel_size"] == 33 and job["params"]["sigma"] == 2.0


@pytest.mark.parametrize(
    ("model", "extra"),
    [
        ("mnist-flow", {"kind": "sample", "prompt": "3", "steps": 6}),
        ("mnist-ddpm", {"kind": "anagram", "prompts": ["6", "9"], "view": "flip", "stride": 60}),
        ("mnist-flow", {"kind": "hybrid", "prompts": ["1", "8"], "steps": 4}),
    ],
)
def test_a_guidance_interval_guides_only_within_it(client, model, extra):
    """Inside every step's noise level it is plain guidance, outside all of them none (random weights: that the
    interval changes the picture in between is tested on the shipped models)."""
    body = {"model": model, "n": 2, "seed": 11, **extra}
    everywhere = succeeded(submit(client, body))
    wide = succeeded(submit(client, {**body, "guidance_interval": [0, 1e6]}))  # every step of the run is inside
    assert wide["params"]["guidance_interval"] == [0, 1e6]
    assert artifact(client, wide, "image_0.png") == artifact(client, everywhere, "image_0.png")
    nowhere = succeeded(submit(client, {**body, "guidance_interval": [1e5, 1e6]}))  # no step is that noisy
    unguided = succeeded(submit(client, {**body, "guidance_scale": 1}))
    assert artifact(client, nowhere, "image_1.png") == artifact(client, unguided, "image_1.png")


def test_one_step_and_iterative_denoising(client):
    job = succeeded(
        submit(client, {"kind": "denoise", "model": "mnist-denoiser", "method": "one_step", "image": DIGIT})
    )
    assert job["params"]["sigma"] == 0.5
    assert names(job) == {"noisy.png", "image_0.png", "grid.png"}
    succeeded(
        submit(
            client, {"kind": "denoise", "model": "mnist-ddpm", "method": "one_step", "image": DIGIT, "timestep": 100}
        )
    )
    succeeded(
        submit(client, {"kind": "denoise", "model": "mnist-flow", "method": "one_step", "image": DIGIT, "i_start": 20})
    )
    job = succeeded(
        submit(
            client,
            {
                "kind": "denoise",
                "model": "mnist-ddpm",
                "method": "iterative",
                "image": DIGIT,
                "stride": 30,
                "i_start": 3,
            },
        )
    )
    assert job["result"]["t_start"] == 180
    assert job["progress"]["total"] == 10 - 3  # 270, 240, ..., 0 and clean: 10 steps, from the 4th
    flow = {"kind": "denoise", "model": "mnist-flow", "method": "iterative", "image": DIGIT, "steps": 8, "i_start": 2}
    job = succeeded(submit(client, flow))
    assert job["result"]["t_start"] == 0.25 and job["progress"]["total"] == 8 - 2
    three = succeeded(submit(client, {**flow, "prompt": "3"}))
    assert three["params"]["prompt"] == "3"  # what it does to the pixels: test_shipped_models.py


@pytest.mark.parametrize(
    ("body", "loc", "words"),
    [
        ({"kind": "sample", "model": "mnist-ddpm", "prompt": "cat"}, ["body", "prompt"], "knows the prompts"),
        ({"kind": "sample", "model": "mnist-ddpm", "class_label": 10}, ["body", "class_label"], "below 10"),
        ({"kind": "sample", "model": "mnist-flow", "stride": 5}, ["body", "stride"], "give `steps`"),
        (
            {"kind": "denoise", "model": "mnist-flow", "method": "iterative", "image": DIGIT, "stride": 5},
            ["body", "stride"],
            "give `steps`",
        ),
        (
            {"kind": "denoise", "model": "mnist-flow", "method": "iterative", "image": DIGIT, "steps": 4, "i_start": 4},
            ["body", "i_start"],
            "below 4",
        ),
        ({"kind": "sample", "model": "mnist-denoiser"}, ["body", "kind"], "cannot run sample"),
        (
            {"kind": "denoise", "model": "mnist-denoiser", "method": "one_step", "image": DIGIT, "prompt": "3"},
            ["body", "prompt"],
            "takes no prompt",
        ),
        (
            {"kind": "denoise", "model": "mnist-ddpm", "method": "blur", "image": DIGIT, "sigma": 0.5, "prompt": "3"},
            ["body", "prompt"],
            "runs no network",
        ),
        (
            {"kind": "denoise", "model": "mnist-ddpm", "method": "iterative", "image": DIGIT, "prompt": "x"},
            ["body", "prompt"],
            "knows the prompts",
        ),
        ({"kind": "anagram", "model": "mnist-ddpm", "prompts": ["6", "x"]}, ["body", "prompts", 1], "knows"),
        (
            {"kind": "sample", "model": "mnist-flow", "guidance_interval": [2, 1]},
            ["body", "sample", "guidance_interval"],
            "lo < hi",
        ),
        (
            {"kind": "hybrid", "model": "mnist-flow", "prompts": ["1", "8"], "guidance_interval": [-1, 1]},
            ["body", "hybrid", "guidance_interval", 0],
            "greater than or equal to 0",
        ),
        (
            {"kind": "anagram", "model": "mnist-ddpm", "prompts": ["6", "9"], "guidance_interval": [1]},
            ["body", "anagram", "guidance_interval"],
            "at least 2",
        ),
        (
            {"kind": "inpaint", "model": "mnist-ddpm", "image": DIGIT, "mask": DIGIT, "clip_denoised": "sometimes"},
            ["body", "inpaint", "clip_denoised"],
            "valid boolean",
        ),
        (
            {"kind": "img2img", "model": "mnist-flow", "image": DIGIT, "i_start": [1, 50]},
            ["body", "i_start", 1],
            "below 50",
        ),
        ({"kind": "img2img", "model": "mnist-ddpm", "image": DIGIT, "i_start": 300}, ["body", "i_start"], "below 300"),
        (
            {"kind": "inpaint", "model": "mnist-ddpm", "image": DIGIT, "mask": {"base64": ""}},
            ["body", "mask", "base64"],
            "not a PNG",
        ),
        (
            {"kind": "denoise", "model": "mnist-denoiser", "method": "one_step", "image": DIGIT, "timestep": 3},
            ["body", "timestep"],
            "give `sigma`",
        ),
        (
            {"kind": "denoise", "model": "mnist-ddpm", "method": "one_step", "image": DIGIT},
            ["body", "timestep"],
            "needs `timestep` or `i_start`",
        ),
    ],
)
def test_rules_of_the_loop_kinds(client, body, loc, words):
    response = client.post("/v1/jobs", json=body)
    assert response.status_code == 422, response.text
    error = response.json()["error"]
    assert loc in [d["loc"] for d in error["details"]], error
    assert words in error["message"]


def test_a_mask_of_another_size_is_422(client):
    mask = png(np.zeros((32, 32), np.uint8))
    upload = client.post("/v1/uploads", content=mask, headers={"Content-Type": "image/png"}).json()
    response = client.post(
        "/v1/jobs", json={"kind": "inpaint", "model": "mnist-ddpm", "image": DIGIT, "mask": {"upload_id": upload["id"]}}
    )
    assert response.status_code == 422
    assert "is 32x32 but the image is 28x28" in response.json()["error"]["message"]


def test_cancel_a_running_sample(client):
    job = client.post("/v1/jobs", json={"kind": "sample", "model": "mnist-ddpm", "n": 64, "stride": 1}).json()
    wait_until(lambda: client.get(f"/v1/jobs/{job['id']}").json()["status"] == "running", 60, "the job to start")
    assert client.delete(f"/v1/jobs/{job['id']}").status_code == 202
    final = client.get(f"/v1/jobs/{job['id']}", params={"wait": 30}).json()
    assert final["status"] == "canceled"
    assert final["progress"] is None or final["progress"]["step"] < 300  # stopped at a step, not at the end
    assert final["artifacts"] == []
