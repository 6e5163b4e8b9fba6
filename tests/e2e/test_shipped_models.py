"""Every kind through HTTP and a real worker on the checkpoints that ship in models/checkpoints.

Tiny random weights (test_generation_kinds.py) check what holds for any weights; here the weights are the shipped
ones, so the pixels must also mean something: samples read as the class asked, the denoiser denoises. The judge is
a nearest-class-mean template matcher built from the training digits (84 % on the held-out ones), cheap enough for
a test; bench/quality.py holds the real measurement (a trained classifier, 1,000 samples).
"""

import numpy as np
import pytest
import torch

from models.datasets import held_out_split, mnist_5k
from models.judge import judge_digits
from tests.helpers import artifact, decode, png, submit, succeeded

FAST = {"mnist-ddpm": {"stride": 10}, "mnist-flow": {"steps": 20}}  # 31 and 20 steps: quick on two CPU cores
FAST["mnist-flow-2step"] = {}  # its defaults: 2 Euler steps, guidance 1 (its teacher's CFG is baked in)
HELD_OUT = {c: int(i) for c, i in ((int(mnist_5k().labels[i]), i) for i in held_out_split(mnist_5k().labels, 50)[1])}


def templates() -> np.ndarray:
    """(10, 784) the mean training digit of each class, centred and normalised."""
    data = mnist_5k()
    train, _ = held_out_split(data.labels, 50)
    pixels = data.images[train].reshape(-1, 784) / 255
    means = np.stack([pixels[data.labels[train] == c].mean(0) for c in range(10)])
    return normalised(means)


def normalised(x: np.ndarray) -> np.ndarray:
    x = x - x.mean(1, keepdims=True)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def read_as(images: list[np.ndarray]) -> list[int]:
    """The class whose mean digit each (28, 28) image in [0, 1] is closest to (cosine)."""
    return list(np.argmax(normalised(np.stack([im.reshape(784) for im in images])) @ templates().T, axis=1))


def pngs(client, job: dict, prefix: str = "image_") -> list[np.ndarray]:
    names = sorted(a["name"] for a in job["artifacts"] if a["name"].startswith(prefix))
    return [decode(artifact(client, job, name)) for name in names]


def test_the_shipped_models_are_listed_with_data_size_and_quality(client):
    models = {m["id"]: m for m in client.get("/v1/models").json()["models"]}
    for name in ("mnist-ddpm", "mnist-flow", "mnist-denoiser"):
        model = models[name]
        assert model["available"], model
        training = model["training"]
        assert training["dataset"]["name"] == "mnist-5k"
        assert "scripts/train_shipped.py" in training["command"]
        assert 100_000 < model["size_bytes"] < 10_000_000
    for name in ("mnist-ddpm", "mnist-flow"):
        assert models[name]["quality"]["samples"]["class_accuracy"] >= 0.98
    distilled = models["mnist-flow-2step"]  # distilled, not trained on digits: its record names its teacher
    assert distilled["available"], distilled
    assert distilled["training"]["distilled_from"]["teacher"] == "mnist-flow"
    assert "scripts/train_shipped.py mnist-flow-2step" in distilled["training"]["command"]
    assert distilled["defaults"] == {"steps": 2, "guidance_scale": 1.0, "sampler": "euler"}
    assert 100_000 < distilled["size_bytes"] < 10_000_000


@pytest.mark.parametrize("model", ["mnist-flow", "mnist-ddpm", "mnist-flow-2step"])
def test_samples_read_as_the_class_asked(client, model):
    asked, images = [], []
    for digit in range(10):
        job = succeeded(submit(client, {"kind": "sample", "model": model, "prompt": str(digit), "n": 2, **FAST[model]}))
        asked += [digit, digit]
        images += pngs(client, job)
    hits = sum(a == r for a, r in zip(asked, read_as(images), strict=True))
    assert hits >= 16, (asked, read_as(images))  # the template matcher reads 84 % of real held-out digits


def test_guidance_within_an_interval_changes_the_samples_and_keeps_the_class(client):
    body = {"kind": "sample", "model": "mnist-flow", "prompt": "3", "n": 8, "seed": 30, **FAST["mnist-flow"]}
    plain = succeeded(submit(client, body))
    limited = succeeded(submit(client, {**body, "guidance_interval": [0, 1]}))  # guided from t = 0.5 on
    unguided = succeeded(submit(client, {**body, "guidance_scale": 1}))
    images = pngs(client, limited)
    assert all(not np.array_equal(a, b) for a, b in zip(images, pngs(client, plain), strict=True))
    assert all(not np.array_equal(a, b) for a, b in zip(images, pngs(client, unguided), strict=True))
    read = judge_digits(torch.from_numpy(np.stack(images)).float()[:, None], torch.full((8,), 3))
    assert read.class_accuracy is not None and read.class_accuracy >= 7 / 8


def test_clipped_clean_estimates_change_the_samples_and_keep_the_class(client):
    body = {"kind": "sample", "model": "mnist-ddpm", "prompt": "5", "n": 8, "seed": 40, **FAST["mnist-ddpm"]}
    plain = succeeded(submit(client, body))
    clipped = succeeded(submit(client, {**body, "clip_denoised": True}))
    assert clipped["params"]["clip_denoised"] is True and plain["params"]["clip_denoised"] is False
    images = pngs(client, clipped)
    assert all(not np.array_equal(a, b) for a, b in zip(images, pngs(client, plain), strict=True))  # CFG 5 overshoots
    again = pngs(client, succeeded(submit(client, {**body, "clip_denoised": True})))
    assert np.array_equal(np.stack(images), np.stack(again))  # same seed, same pixels
    read = judge_digits(torch.from_numpy(np.stack(images)).float()[:, None], torch.full((8,), 5))
    assert read.class_accuracy is not None and read.class_accuracy >= 7 / 8


def test_the_denoiser_brings_a_noisy_digit_closer_to_the_clean_one(client):
    index = HELD_OUT[3]
    body = {
        "kind": "denoise",
        "model": "mnist-denoiser",
        "method": "one_step",
        "image": {"dataset": "mnist-5k", "index": index},
        "sigma": 0.5,
        "seed": 0,
    }
    job = succeeded(submit(client, body))
    clean = mnist_5k().images[index] / 255
    noisy, denoised = decode(artifact(client, job, "noisy.png")), decode(artifact(client, job, "image_0.png"))
    assert np.abs(denoised - clean).mean() < 0.5 * np.abs(noisy - clean).mean()


def test_iterative_denoising_follows_its_prompt(client):
    """From nearly pure noise (the 3rd of 31 strided steps), the estimates conditioned on "3" and on "8" lead apart."""
    body = {
        "kind": "denoise",
        "model": "mnist-ddpm",
        "method": "iterative",
        "image": {"dataset": "mnist-5k", "index": 0},
    }
    jobs = [
        succeeded(submit(client, {**body, **FAST["mnist-ddpm"], "i_start": 2, "seed": 1, "prompt": p})) for p in "38"
    ]
    three, eight = (decode(artifact(client, job, "image_0.png")) for job in jobs)
    assert np.abs(three - eight).mean() > 0.05
    assert read_as([three, eight]) == [3, 8]


@pytest.mark.parametrize("model", ["mnist-flow", "mnist-ddpm"])
def test_every_loop_kind_round_trips(client, model):
    digit = {"dataset": "mnist-5k", "index": HELD_OUT[7]}
    fast = FAST[model]
    noise = {"sigmas": [0.5]} if model == "mnist-flow" else {"timesteps": [150]}
    succeeded(submit(client, {"kind": "noise", "model": model, "image": digit, **noise}))
    late = {"stride": 10, "i_start": 25} if model == "mnist-ddpm" else {"steps": 20, "i_start": 15}
    iterative = {"kind": "denoise", "model": model, "method": "iterative", "image": digit, **late}
    succeeded(submit(client, iterative))
    job = succeeded(
        submit(client, {"kind": "img2img", "model": model, "image": digit, "i_start": [10, 15], "prompt": "7", **fast})
    )
    assert read_as(pngs(client, job)) == [7, 7]  # late starts keep the digit
    mask = np.zeros((28, 28), np.uint8)
    mask[14:] = 255
    upload = client.post("/v1/uploads", content=png(mask), headers={"Content-Type": "image/png"}).json()
    job = succeeded(
        submit(
            client,
            {
                "kind": "inpaint",
                "model": model,
                "image": digit,
                "prompt": "7",
                "mask": {"upload_id": upload["id"]},
                **fast,
            },
        )
    )
    (out,) = pngs(client, job)
    assert np.array_equal(out[:14], mnist_5k().images[HELD_OUT[7]][:14] / 255)
    job = succeeded(
        submit(client, {"kind": "anagram", "model": model, "prompts": ["6", "9"], "view": "rotate_180", **fast})
    )
    assert np.array_equal(np.rot90(pngs(client, job)[0], 2), pngs(client, job, "view_")[1])
    succeeded(submit(client, {"kind": "hybrid", "model": model, "prompts": ["1", "8"], **fast}))
