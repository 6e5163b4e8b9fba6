"""`train` jobs end to end: real Redis, the real API, a real `mnist` worker and a real `train` worker, over HTTP.

Tiny runs (D = 8, one epoch, a few hundred digits of mnist-5k): what is checked is what must hold for any weights:
the artifacts of part B, progress, the model served at once by every sampling kind, ownership, the rules at the door,
cancel, divergence, and a worker killed mid-training whose retried job resumes from its last saved epoch.
"""

import io
import json
import re
import signal
import subprocess
import time
from collections.abc import Iterator

import httpx
import numpy as np
import pytest
import torch
from PIL import Image

from models.train_config import native_bf16
from tests.helpers import (
    TEST_KEYS,
    Stack,
    artifact,
    cli,
    client_for,
    decode,
    names,
    png,
    running_stack,
    stop,
    succeeded,
    wait_until,
)

TINY = {
    "kind": "train",
    "dataset": "mnist-5k",
    "hidden": 8,
    "epochs": 1,
    "limit": 200,
    "batch_size": 32,
    "sample_steps": 20,
    "seed": 1,
}
ENV = {"OMP_NUM_THREADS": "1"}  # one thread per process: the tests' processes share two cores
DIGIT = {"dataset": "mnist-5k", "index": 7}
TERMINAL = ("succeeded", "failed", "canceled")
CHECKPOINT = {"config.json", "diffusion_pytorch_model.safetensors"}


@pytest.fixture(scope="module")
def stack(redis_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    tmp = tmp_path_factory.mktemp("train-stack")
    (tmp / "data").mkdir()  # an empty DATA_DIR: mnist and folders are missing here
    with running_stack(redis_url, tmp, DATA_DIR=str(tmp / "data"), **ENV) as s:
        s.start_worker("train")
        yield s


@pytest.fixture(scope="module")
def owner(stack: Stack) -> Iterator[httpx.Client]:
    with client_for(stack, TEST_KEYS[-20]) as c:
        yield c


def finish(client: httpx.Client, job_id: str, timeout: float = 240) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        job = client.get(f"/v1/jobs/{job_id}", params={"wait": 30}).json()
        if job["status"] in TERMINAL or time.monotonic() > deadline:
            return job
        time.sleep(0.1)


def train(client: httpx.Client, **body: object) -> dict:
    response = client.post("/v1/jobs", json={**TINY, **body})
    assert response.status_code == 202, response.text
    return finish(client, response.json()["id"])


def error_of(response: httpx.Response, status: int) -> dict:
    assert response.status_code == status, response.text
    return response.json()["error"]


@pytest.fixture(scope="module")
def class_model(owner: httpx.Client) -> dict:
    """A class-conditioned flow model of `owner`'s, trained once for the module."""
    job = train(owner, name="tiny-flow-class", objective="flow", conditioning="class")
    assert job["status"] == "succeeded", job
    return job


@pytest.mark.parametrize(
    ("objective", "conditioning", "precision"),
    [("denoiser", "none", "auto"), ("ddpm", "time", "fp32"), ("ddpm", "class", "auto"), ("flow", "time", "bf16")],
)
def test_each_objective_and_conditioning_trains_a_model_that_serves(client, objective, conditioning, precision):
    name = f"tiny-{objective}-{conditioning}"
    weighting = "v" if (objective, conditioning) == ("ddpm", "time") else "uniform"
    job = train(
        client, name=name, objective=objective, conditioning=conditioning, precision=precision, loss_weight=weighting
    )
    assert job["status"] == "succeeded", job
    native = native_bf16(torch.device("cpu"))  # auto: bf16 autocast where the CPU has it natively
    assert job["result"]["precision"] == {"auto": "bf16" if native else "fp32"}.get(precision, precision)
    assert job["kind"] == "train" and job["model"] == name
    assert job["params"]["conditioning"] == conditioning and job["params"]["lr"] > 0
    expected = {"noising.png", "loss.png", "epoch_1.png", "metrics.json"} | CHECKPOINT
    expected |= {"ood.png", "pure_noise.png", "mean_image.png"} if objective == "denoiser" else {"frames.gif"}
    assert names(job) == expected
    for a in job["artifacts"]:
        data = artifact(client, job, a["name"])
        assert len(data) == a["bytes"]
        if a["media_type"].startswith("image/"):
            Image.open(io.BytesIO(data)).verify()
    metrics = json.loads(artifact(client, job, "metrics.json"))
    assert metrics["loss_weight"] == job["params"]["loss_weight"] == weighting
    assert metrics["epochs_done"] == 1 and metrics["steps"] == 7 == job["result"]["steps"]  # 200 digits, batch 32
    if objective == "denoiser":
        assert "quality" not in metrics and job["result"]["quality"] is None
    else:  # the digit judge read 10 samples of each class (class models) or 100 samples
        quality = metrics["quality"]
        assert quality == job["result"]["quality"] and quality["n"] == 100
        assert quality["fd"] > 0 and quality["fd_floor_same_n"] > 0
        assert (quality["class_accuracy"] is None) == (conditioning != "class")
        assert quality["guidance_scale"] == (5.0 if conditioning == "class" else None)
    assert job["result"]["model"] == name and job["result"]["start_epoch"] == 0
    progress = job["progress"]
    assert progress["stage"] == "training" and progress["step"] == progress["total"] == 7 and progress["fraction"] == 1
    assert progress["epochs_done"] == progress["epochs"] == progress["epoch"] == 1 and progress["eta_seconds"] == 0

    model = client.get(f"/v1/models/{name}").json()
    assert model["shipped"] is False and model["objective"] == objective
    assert model["dataset"] == "mnist-5k" and model["conditioning"] == conditioning and model["job_id"] == job["id"]
    assert model["size_bytes"] > 0 and model["training_seconds"] > 0 and model["metrics"]["steps"] == 7
    assert model["metrics"]["quality"] == job["result"]["quality"]
    assert model["classes"] == ([str(d) for d in range(10)] if conditioning == "class" else [])
    assert name in [m["id"] for m in client.get("/v1/models").json()["models"]]

    if objective == "denoiser":
        one_step = {"kind": "denoise", "model": name, "method": "one_step", "image": DIGIT}
        done = succeeded(client.post("/v1/jobs", json=one_step, headers={"Prefer": "wait=60"}))
        assert done["params"]["sigma"] == 0.5
        assert error_of(client.post("/v1/jobs", json={"kind": "sample", "model": name}), 422)
        return
    schedule = {"steps": 4} if objective == "flow" else {"stride": 60}
    sample = {"kind": "sample", "model": name, "n": 2, "seed": 3, **schedule}
    if conditioning == "class":
        sample["prompt"] = "4"
    done = succeeded(client.post("/v1/jobs", json=sample, headers={"Prefer": "wait=60"}))
    assert decode(artifact(client, done, "image_0.png")).shape == (28, 28)
    one_step = {"kind": "denoise", "model": name, "method": "one_step", "image": DIGIT, "i_start": 1}
    succeeded(client.post("/v1/jobs", json=one_step, headers={"Prefer": "wait=60"}))
    if conditioning == "time":  # no classes: nothing to combine
        anagram = {"kind": "anagram", "model": name, "prompts": ["1", "2"]}
        assert error_of(client.post("/v1/jobs", json=anagram), 422)["details"][0]["loc"] == ["body", "kind"]


def test_a_class_model_serves_every_sampling_kind(owner, class_model):
    model = class_model["result"]["model"]
    assert {"noising.png", "loss.png", "epoch_1.png", "frames.gif", "metrics.json"} | CHECKPOINT == names(class_model)
    assert Image.open(io.BytesIO(artifact(owner, class_model, "frames.gif"))).n_frames >= 2
    mask = np.zeros((28, 28), np.uint8)
    mask[6:20, 6:20] = 255
    upload = owner.post("/v1/uploads", content=png(mask), headers={"Content-Type": "image/png"}).json()
    bodies = [
        {"kind": "sample", "prompt": "3", "n": 2, "frames": True, "steps": 4},
        {"kind": "img2img", "image": DIGIT, "i_start": [1, 2], "prompt": "7", "steps": 4},
        {"kind": "inpaint", "image": DIGIT, "mask": {"upload_id": upload["id"]}, "prompt": "1", "steps": 4},
        {"kind": "anagram", "prompts": ["6", "9"], "steps": 4},
        {"kind": "hybrid", "prompts": ["0", "1"], "kernel_size": 5, "steps": 4},
        {"kind": "denoise", "method": "iterative", "image": DIGIT, "i_start": 1},
        {"kind": "denoise", "method": "one_step", "image": DIGIT, "i_start": 10},
        {"kind": "noise", "image": DIGIT, "sigmas": [0.2, 0.5]},
    ]
    for body in bodies:
        job = succeeded(owner.post("/v1/jobs", json={**body, "model": model, "seed": 2}, headers={"Prefer": "wait=60"}))
        assert "image_0.png" in names(job), job
    inpainted = succeeded(
        owner.post(
            "/v1/jobs",
            json={"kind": "inpaint", "model": model, "image": DIGIT, "mask": {"upload_id": upload["id"]}, "steps": 4},
            headers={"Prefer": "wait=60"},
        )
    )
    kept = decode(artifact(owner, inpainted, "image_0.png"))[mask == 0]
    from models.datasets import mnist_5k

    assert np.array_equal(kept, mnist_5k().images[7][mask == 0] / 255)


def test_another_key_sees_neither_the_model_nor_its_job(stack, owner, class_model):
    model = class_model["result"]["model"]
    with client_for(stack, TEST_KEYS[-21]) as other:
        assert error_of(other.get(f"/v1/models/{model}"), 404)["type"] == "not_found"
        assert model not in [m["id"] for m in other.get("/v1/models").json()["models"]]
        assert error_of(other.delete(f"/v1/models/{model}"), 404)
        assert error_of(other.get(f"/v1/jobs/{class_model['id']}"), 404)
        assert error_of(other.get(f"/v1/jobs/{class_model['id']}/artifacts/config.json"), 404)
        sample = other.post("/v1/jobs", json={"kind": "sample", "model": model, "prompt": "1"})
        assert error_of(sample, 422)["details"][0]["loc"] == ["body", "model"]
        # the name is the owner's only: another key may use it for a model of its own
        same_name = other.post("/v1/jobs", json={**TINY, "name": model, "objective": "denoiser", "epochs": 1})
        assert same_name.status_code == 202, same_name.text
        other.delete(f"/v1/jobs/{same_name.json()['id']}")


def test_name_clashes_are_409(owner, class_model):
    model = class_model["result"]["model"]
    assert error_of(owner.post("/v1/jobs", json={**TINY, "name": "mnist-ddpm", "objective": "ddpm"}), 409)
    clash = error_of(owner.post("/v1/jobs", json={**TINY, "name": model, "objective": "flow"}), 409)
    assert "already have a model" in clash["message"]
    first = owner.post("/v1/jobs", json={**TINY, "name": "in-flight", "objective": "flow", "epochs": 3, "limit": 2000})
    assert first.status_code == 202
    again = error_of(owner.post("/v1/jobs", json={**TINY, "name": "in-flight", "objective": "ddpm"}), 409)
    assert first.json()["id"] in again["message"]
    owner.delete(f"/v1/jobs/{first.json()['id']}")
    assert finish(owner, first.json()["id"])["status"] == "canceled"
    freed = owner.post("/v1/jobs", json={**TINY, "name": "in-flight", "objective": "denoiser"})
    assert freed.status_code == 202, freed.text  # a canceled job frees its name
    assert finish(owner, freed.json()["id"])["status"] == "succeeded"


@pytest.mark.parametrize(
    ("change", "loc"),
    [
        ({"epochs": 0}, ["body", "train", "epochs"]),
        ({"epochs": 100000}, ["body", "train", "epochs"]),
        ({"batch_size": 0}, ["body", "train", "batch_size"]),
        ({"lr": 0}, ["body", "train", "lr"]),
        ({"lr": -1e-3}, ["body", "train", "lr"]),
        ({"hidden": 0}, ["body", "train", "hidden"]),
        ({"name": "Not_A_Name"}, ["body", "train", "name"]),
        ({"objective": "gan"}, ["body", "train", "objective"]),
        ({"conditioning": "class", "objective": "denoiser"}, ["body", "train", "conditioning"]),
        ({"conditioning": "none", "objective": "flow"}, ["body", "train", "conditioning"]),
        ({"sample_epochs": [2]}, ["body", "train", "sample_epochs"]),
        ({"image_size": 32}, ["body", "train", "image_size"]),
        ({"sigma": 0.3, "objective": "flow"}, ["body", "train", "sigma"]),
        ({"limit": 6000}, ["body", "limit"]),
        ({"dataset": "cifar-10"}, ["body", "dataset"]),
        ({"dataset": "folder:../../etc"}, ["body", "dataset"]),
        ({"dataset": "folder:/etc"}, ["body", "dataset"]),
    ],
)
def test_bad_inputs_are_422_naming_the_field(client, change, loc):
    body = {**TINY, "name": "bad", "objective": "ddpm", **change}
    error = error_of(client.post("/v1/jobs", json=body), 422)
    assert loc in [d["loc"] for d in error["details"]], error


def test_a_missing_dataset_says_how_to_get_it(client):
    error = error_of(client.post("/v1/jobs", json={**TINY, "name": "mm", "objective": "flow", "dataset": "mnist"}), 422)
    assert error["details"][0]["loc"] == ["body", "dataset"]
    assert "put the four MNIST files" in error["message"] and "train-images-idx3-ubyte" in error["message"]
    folder = error_of(
        client.post("/v1/jobs", json={**TINY, "name": "mm", "objective": "flow", "dataset": "folder:faces"}), 422
    )
    assert "put the images there" in folder["message"]


def test_a_diverging_run_fails_with_that_reason_and_makes_no_model(client):
    job = train(client, name="diverges", objective="flow", lr=1e8, grad_clip=0, epochs=2)
    assert job["status"] == "failed", job
    assert job["error"]["type"] == "training_diverged"
    message = job["error"]["message"]  # NaN, or (measured) 3e33 at step 2: a blow-up either way
    assert re.search(r"the loss became (nan|\S+ at epoch 1, step \d+, \S+ times its first value)", message), message
    assert "at epoch 1" in message and "lower `lr`" in message
    assert job["attempts"] == 1  # not retried: it would diverge again
    assert error_of(client.get("/v1/models/diverges"), 404)


def test_progress_then_cancel_keeps_the_last_epochs_checkpoint(client):
    body = {**TINY, "name": "cancel-me", "objective": "ddpm", "epochs": 20, "limit": 1000, "sample_epochs": [1]}
    job = client.post("/v1/jobs", json=body).json()
    seen = wait_until(
        lambda: (
            (j := client.get(f"/v1/jobs/{job['id']}").json())["progress"]
            and j["progress"]["stage"] == "training"
            and j["progress"].get("epochs_done", 0) >= 1
            and j
        ),
        240,
        "the first epoch to be saved",
        every=0.1,
    )
    progress = seen["progress"]
    assert progress["epochs"] == 20 and progress["total"] == 20 * 32 and progress["epoch"] >= 2
    assert progress["loss"] > 0 and progress["images_per_second"] > 0 and progress["eta_seconds"] >= 0
    assert client.delete(f"/v1/jobs/{job['id']}").status_code == 202
    final = finish(client, job["id"], 60)
    assert final["status"] == "canceled"
    assert CHECKPOINT | {"epoch_1.png", "loss.png", "metrics.json", "noising.png"} <= names(final)
    config = json.loads(artifact(client, final, "config.json"))
    assert config["hidden"] == 8 and config["time_conditioned"] is True
    assert json.loads(artifact(client, final, "metrics.json"))["epochs_done"] >= 1
    assert error_of(client.get("/v1/models/cancel-me"), 404)  # canceled: no model


def test_delete_a_trained_model(client):
    job = train(client, name="short-lived", objective="denoiser")
    assert job["status"] == "succeeded"
    assert error_of(client.delete("/v1/models/mnist-flow"), 409)["type"] == "conflict"
    assert client.delete("/v1/models/short-lived").status_code == 204
    assert error_of(client.get("/v1/models/short-lived"), 404)
    assert error_of(client.delete("/v1/models/short-lived"), 404)
    body = {"kind": "denoise", "model": "short-lived", "method": "one_step", "image": DIGIT}
    assert error_of(client.post("/v1/jobs", json=body), 422)
    again = train(client, name="short-lived", objective="denoiser")  # the name is free again
    assert again["status"] == "succeeded"


def test_the_command_line_runs_the_same_training(tmp_path):
    out = tmp_path / "cli-model"
    argv = cli("train", "--dataset", "mnist-5k", "--objective", "ddpm", "--conditioning", "time", "--hidden", "8")
    argv += ["--epochs", "1", "--limit", "100", "--sample-steps", "10", "--threads", "1", "--out", str(out)]
    done = subprocess.run(argv, capture_output=True, timeout=240)
    assert done.returncode == 0, done.stderr.decode()[-2000:]
    expected = {"noising.png", "loss.png", "epoch_1.png", "frames.gif", "metrics.json", "training.json", "state.pt"}
    assert expected | CHECKPOINT <= {p.name for p in out.iterdir()}
    record = json.loads((out / "training.json").read_text())
    assert record["params"]["lr"] == 1e-3 and record["result"]["steps"] == 1  # 100 digits, batch 128

    from models.unet import load_network

    assert load_network(out).config["time_conditioned"] is True
    bad = subprocess.run(
        cli("train", "--dataset", "mnist-5k", "--objective", "flow", "--epochs", "0", "--out", str(out)),
        capture_output=True,
        timeout=120,
    )
    assert bad.returncode == 2 and b"epochs" in bad.stderr


@pytest.mark.slow
def test_a_killed_training_worker_resumes_from_its_last_saved_epoch(redis_url, tmp_path):
    body = {**TINY, "name": "resumed", "objective": "flow", "epochs": 3, "limit": 1500, "sample_epochs": [3], "seed": 5}
    with running_stack(redis_url, tmp_path, workers=1, **ENV) as stack, client_for(stack, TEST_KEYS[-22]) as c:
        trainer = stack.start_worker("train")
        job = c.post("/v1/jobs", json=body).json()
        wait_until(
            lambda: (
                (p := c.get(f"/v1/jobs/{job['id']}").json()["progress"])
                and p["stage"] == "training"
                and p["epochs_done"] >= 1
                and p["epoch"] == 2
            ),
            240,
            "the first epoch to be saved",
            every=0.05,
        )
        stop(trainer, signal.SIGKILL)  # the real worker process, mid-epoch 2
        assert c.get(f"/v1/jobs/{job['id']}").json()["status"] == "running"
        stack.start_worker("train")
        final = finish(c, job["id"], 240)
        assert final["status"] == "succeeded", final
        assert final["attempts"] == 2
        result = final["result"]
        assert result["resumed"] is True and result["start_epoch"] == 1
        assert result["steps"] == 3 * 47 and len(result["epoch_losses"]) == 3  # 1500 digits, batch 32
        assert json.loads(artifact(c, final, "metrics.json"))["start_epoch"] == 1

        # the same run uninterrupted (another name) learns exactly the same: the state resumed everything
        straight = c.post("/v1/jobs", json={**body, "name": "straight"}).json()
        uninterrupted = finish(c, straight["id"], 240)
        assert uninterrupted["status"] == "succeeded"
        assert uninterrupted["result"]["steps"] == result["steps"]
        assert uninterrupted["result"]["epoch_losses"] == pytest.approx(result["epoch_losses"], rel=1e-4)

        sample = {"kind": "sample", "model": "resumed", "prompt": "5", "steps": 4}
        done = succeeded(c.post("/v1/jobs", json=sample, headers={"Prefer": "wait=60"}))
        assert decode(artifact(c, done, "image_0.png")).shape == (28, 28)
