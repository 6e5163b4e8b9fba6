"""`noise` and `denoise` (blur) through the real API, Redis and worker: pixels checked against the formulas."""

import numpy as np
import pytest
import torch

from models.datasets import mnist_5k
from models.filters import gaussian_blur
from tests.helpers import artifact, b64, decode, png, submit

GRAY = np.full((64, 64), 128, dtype=np.uint8)  # mid-gray: noise of these sizes never clips


def abar(t: int) -> float:
    """alphas_cumprod of the linear schedule, T = 300, computed here independently of the service."""
    return float(np.cumprod(1 - np.linspace(1e-4, 0.02, 300))[t])


@pytest.fixture
def gray_upload(client) -> str:
    response = client.post("/v1/uploads", content=png(GRAY), headers={"Content-Type": "image/png"})
    assert response.status_code == 201, response.text
    body = response.json()
    assert (body["media_type"], body["width"], body["height"]) == ("image/png", 64, 64)
    return body["id"]


def test_sigma_noise_has_the_asked_standard_deviation(client, gray_upload):
    response = submit(
        client,
        {"kind": "noise", "model": "mnist-ddpm", "image": {"upload_id": gray_upload}, "sigmas": [0.05, 0.1], "seed": 7},
    )
    assert response.status_code == 200, response.text
    job = response.json()
    assert job["status"] == "succeeded"
    assert response.headers["location"] == f"/v1/jobs/{job['id']}"
    assert {a["name"] for a in job["artifacts"]} == {"image_0.png", "image_1.png", "grid.png"}
    clean = GRAY / 255
    for i, sigma in enumerate([0.05, 0.1]):
        noisy = decode(artifact(client, job, f"image_{i}.png"))
        assert noisy.shape == (64, 64)
        assert np.std(noisy - clean) == pytest.approx(sigma, rel=0.05)
        assert abs(np.mean(noisy - clean)) < 0.01


def test_ddpm_forward_process_matches_the_schedule(client, gray_upload):
    t = 20
    job = submit(
        client,
        {"kind": "noise", "model": "mnist-ddpm", "image": {"upload_id": gray_upload}, "timesteps": [t], "seed": 3},
    ).json()
    assert job["status"] == "succeeded", job
    noisy = decode(artifact(client, job, "image_0.png"))
    residual = noisy - np.sqrt(abar(t)) * (GRAY / 255)  # x_t - sqrt(abar) x0 = sqrt(1 - abar) eps
    assert np.std(residual) == pytest.approx(np.sqrt(1 - abar(t)), rel=0.05)
    assert abs(np.mean(residual)) < 0.01


def test_same_seed_same_pixels_other_seed_other_pixels(client, gray_upload):
    body = {"kind": "noise", "model": "mnist-ddpm", "image": {"upload_id": gray_upload}, "sigmas": [0.2], "seed": 11}
    first = submit(client, body).json()
    again = submit(client, body).json()
    other = submit(client, {**body, "seed": 12}).json()
    name = "image_0.png"
    assert artifact(client, first, name) == artifact(client, again, name)
    assert artifact(client, first, name) != artifact(client, other, name)


def test_output_i_does_not_depend_on_the_other_outputs(client, gray_upload):
    image = {"upload_id": gray_upload}
    both = submit(client, {"kind": "noise", "model": "mnist-ddpm", "image": image, "sigmas": [0.3, 0.1], "seed": 5})
    alone = submit(client, {"kind": "noise", "model": "mnist-ddpm", "image": image, "sigmas": [0.3], "seed": 5})
    assert artifact(client, both.json(), "image_0.png") == artifact(client, alone.json(), "image_0.png")


def test_a_drawn_seed_is_recorded_in_params(client, gray_upload):
    job = submit(
        client, {"kind": "noise", "model": "mnist-ddpm", "image": {"upload_id": gray_upload}, "sigmas": [0.1]}
    ).json()
    assert isinstance(job["params"]["seed"], int)
    assert job["result"]["seed"] == job["params"]["seed"]


def test_every_image_input_form_gives_the_same_image(client, gray_upload):
    digit = mnist_5k().images[12]
    upload = client.post("/v1/uploads", files={"file": ("digit.png", png(digit), "image/png")}).json()
    forms = [{"upload_id": upload["id"]}, {"base64": b64(png(digit))}, {"dataset": "mnist-5k", "index": 12}]
    outputs = []
    for image in forms:
        job = submit(client, {"kind": "noise", "model": "mnist-ddpm", "image": image, "sigmas": [0.0]}).json()
        assert job["status"] == "succeeded", job
        outputs.append(artifact(client, job, "image_0.png"))
    chained = submit(
        client,
        {
            "kind": "noise",
            "model": "mnist-ddpm",
            "sigmas": [0.0],
            "image": {"job_id": job["id"], "artifact": "image_0.png"},
        },
    ).json()
    assert chained["status"] == "succeeded", chained
    outputs.append(artifact(client, chained, "image_0.png"))
    assert all(np.array_equal(decode(o), digit / 255) for o in outputs)


def test_blur_of_a_clean_image_is_exactly_the_gaussian_blur(client):
    job = submit(
        client,
        {
            "kind": "denoise",
            "model": "mnist-ddpm",
            "image": {"dataset": "mnist-5k", "index": 0},
            "kernel_size": 5,
            "blur_sigma": 1.5,
        },
    ).json()
    assert job["status"] == "succeeded", job
    clean = torch.tensor(mnist_5k().images[0] / 255).float()[None, None]
    expected = gaussian_blur(clean, 5, 1.5)[0, 0].numpy()
    assert np.abs(decode(artifact(client, job, "image_0.png")) - expected).max() <= 0.5 / 255 + 1e-6


def test_blur_denoising_removes_noise(client, gray_upload):
    job = submit(
        client,
        {
            "kind": "denoise",
            "model": "mnist-ddpm",
            "method": "blur",
            "sigma": 0.1,
            "seed": 2,
            "image": {"upload_id": gray_upload},
            "kernel_size": 5,
            "blur_sigma": 1.5,
        },
    ).json()
    assert job["status"] == "succeeded", job
    assert {a["name"] for a in job["artifacts"]} == {"noisy.png", "image_0.png", "grid.png"}
    assert job["progress"]["fraction"] == 1.0
    clean = GRAY / 255
    noisy = decode(artifact(client, job, "noisy.png"))
    denoised = decode(artifact(client, job, "image_0.png"))
    assert np.std(noisy - clean) == pytest.approx(0.1, rel=0.05)
    # A normalised 5x5 Gaussian of sigma 1.5 averages ~19 pixels' worth of independent noise: std / ~4.
    assert np.std(denoised[4:-4, 4:-4] - clean[4:-4, 4:-4]) < 0.35 * 0.1


def test_blur_default_sigma_is_torchvisions(client):
    job = submit(
        client,
        {"kind": "denoise", "model": "mnist-ddpm", "image": {"dataset": "mnist-5k", "index": 0}, "kernel_size": 7},
    ).json()
    assert job["params"]["blur_sigma"] == pytest.approx(1.4)
    assert job["params"]["method"] == "blur"
