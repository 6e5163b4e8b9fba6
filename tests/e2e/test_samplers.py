"""Samplers through HTTP and a real worker (docs/api.md, "Samplers"): every solver on every loop kind, the default
unchanged, cross-job batching only with the same solver, cancellation, and the rules at the door. Tiny random
checkpoints: what is checked holds for any weights."""

import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import httpx
import numpy as np
import pytest

from core.samplers import EPS, FLOW
from models.datasets import mnist_5k
from tests.e2e.test_api_errors import error_of
from tests.e2e.test_generation_kinds import DIGIT, save_tiny_checkpoints, stack  # noqa: F401 (its stack)
from tests.helpers import (
    Stack,
    artifact,
    decode,
    finish,
    png,
    running_stack,
    stop,
    submit,
    succeeded,
    wait_until,
)

EPS_MODEL, FLOW_MODEL = "mnist-ddpm", "mnist-flow"


def steps_for(model: str, sampler: str) -> int:
    return max(4, (FLOW if model == FLOW_MODEL else EPS)[sampler].min_steps)


EVERY = [(EPS_MODEL, name) for name in EPS] + [(FLOW_MODEL, name) for name in FLOW]


@pytest.mark.parametrize(("model", "sampler"), EVERY)
def test_every_sampler_samples_reports_each_step_and_repeats_its_pixels(client, model, sampler):
    body = {"kind": "sample", "model": model, "prompt": "3", "n": 2, "seed": 5, "sampler": sampler}
    body["steps"] = steps_for(model, sampler)
    job = succeeded(submit(client, body))
    assert job["params"]["sampler"] == sampler
    assert job["progress"]["step"] == job["progress"]["total"] == body["steps"]
    again = succeeded(submit(client, body))
    assert artifact(client, job, "grid.png") == artifact(client, again, "grid.png")


def test_the_default_sampler_is_the_loop_of_before(client):
    for model, default in ((EPS_MODEL, "ddpm"), (FLOW_MODEL, "euler")):
        body = {"kind": "sample", "model": model, "prompt": "4", "n": 1, "seed": 2, "steps": 6}
        plain = succeeded(submit(client, body))
        assert plain["params"]["sampler"] == default
        named = succeeded(submit(client, {**body, "sampler": default}))
        assert artifact(client, plain, "image_0.png") == artifact(client, named, "image_0.png")


def test_a_sampler_named_without_steps_runs_its_own_default_steps(client):
    job = succeeded(submit(client, {"kind": "sample", "model": EPS_MODEL, "n": 1, "sampler": "unipc"}))
    assert job["params"]["steps"] == EPS["unipc"].default_steps and job["params"].get("stride") is None
    assert job["progress"]["total"] == EPS["unipc"].default_steps


def test_the_models_list_their_samplers_with_hints(client):
    models = {m["id"]: m for m in client.get("/v1/models").json()["models"]}
    eps = {s["name"]: s for s in models[EPS_MODEL]["samplers"]}
    assert set(eps) == set(EPS) and eps["ddpm"]["default"] and not eps["dpmpp_2m"]["default"]
    assert eps["dpmpp_2m"]["good_steps"] == list(EPS["dpmpp_2m"].good_steps)
    assert eps["ddim"]["takes"] == ["eta", "spacing"]
    assert {s["name"] for s in models[FLOW_MODEL]["samplers"]} == set(FLOW)
    assert models["mnist-denoiser"]["samplers"] == []


@pytest.mark.parametrize(("model", "sampler"), [(EPS_MODEL, "dpmpp_2m"), (EPS_MODEL, "heun"), (FLOW_MODEL, "ab2")])
def test_inpainting_keeps_every_unmasked_pixel_with_any_sampler(client, model, sampler):
    mask = np.zeros((28, 28), np.uint8)
    mask[8:20, 8:20] = 255
    upload = client.post("/v1/uploads", content=png(mask), headers={"Content-Type": "image/png"}).json()
    body = {"kind": "inpaint", "model": model, "image": DIGIT, "n": 2, "prompt": "1", "sampler": sampler, "steps": 5}
    job = succeeded(submit(client, {**body, "mask": {"upload_id": upload["id"]}}))
    original = mnist_5k().images[7] / 255
    for i in range(2):
        out = decode(artifact(client, job, f"image_{i}.png"))
        assert np.array_equal(out[mask == 0], original[mask == 0])


@pytest.mark.parametrize(
    "body",
    [
        {"kind": "anagram", "model": EPS_MODEL, "prompts": ["6", "9"], "view": "rotate_180", "sampler": "unipc"},
        {"kind": "anagram", "model": FLOW_MODEL, "prompts": ["6", "9"], "sampler": "heun"},
        {"kind": "hybrid", "model": EPS_MODEL, "prompts": ["1", "8"], "sampler": "dpmpp_sde"},
        {"kind": "hybrid", "model": FLOW_MODEL, "prompts": ["0", "6"], "sampler": "midpoint"},
        {"kind": "sample", "model": EPS_MODEL, "prompt": "2", "sampler": "euler", "guidance_interval": [0.1, 3.0]},
        {"kind": "sample", "model": EPS_MODEL, "prompt": "2", "sampler": "ddim", "eta": 0.5, "spacing": "leading"},
        {"kind": "sample", "model": EPS_MODEL, "prompt": "2", "sampler": "dpmpp_2m", "clip_denoised": True},
        {"kind": "sample", "model": EPS_MODEL, "prompt": "2", "sampler": "ddpm", "spacing": "trailing"},
    ],
    ids=lambda body: f"{body['kind']}-{body['model']}-{body['sampler']}",
)
def test_every_loop_kind_runs_with_a_sampler(client, body):
    job = succeeded(submit(client, {"n": 1, "seed": 3, "steps": 4, **body}))
    assert job["params"]["sampler"] == body["sampler"]
    assert job["progress"]["total"] == 4


@pytest.mark.parametrize(("model", "sampler"), [(EPS_MODEL, "dpmpp_2m"), (EPS_MODEL, "heun"), (FLOW_MODEL, "ab2")])
def test_sdedit_starts_each_run_at_its_i_start(client, model, sampler):
    body = {"kind": "img2img", "model": model, "image": DIGIT, "prompt": "7", "seed": 1, "steps": 8}
    job = succeeded(submit(client, {**body, "sampler": sampler, "i_start": [2, 5]}))
    assert job["progress"]["total"] == (8 - 2) + (8 - 5)
    assert len(job["result"]["t_start"]) == 2


def test_iterative_denoising_takes_a_sampler(client):
    body = {"kind": "denoise", "model": EPS_MODEL, "image": DIGIT, "method": "iterative", "steps": 10, "i_start": 4}
    job = succeeded(submit(client, {**body, "sampler": "ddim", "eta": 0.0, "seed": 1}))
    assert job["progress"]["total"] == 6 and job["params"]["sampler"] == "ddim"


@pytest.mark.parametrize(
    ("body", "loc", "words"),
    [
        ({"model": FLOW_MODEL, "sampler": "dpmpp_2m"}, "sampler", "flow-matching model; its samplers are"),
        ({"model": EPS_MODEL, "sampler": "midpoint"}, "sampler", "noise-prediction model"),
        ({"model": EPS_MODEL, "sampler": "heun", "steps": 1}, "steps", "at least 2 steps"),
        ({"model": FLOW_MODEL, "sampler": "midpoint", "steps": 1}, "steps", "at least 2 steps"),
        ({"model": EPS_MODEL, "sampler": "dpmpp_2m", "eta": 0.5}, "eta", "only ddim"),
        ({"model": EPS_MODEL, "sampler": "euler", "spacing": "trailing"}, "spacing", "takes no spacing"),
        ({"model": FLOW_MODEL, "spacing": "trailing"}, "spacing", "takes no spacing"),
        ({"model": EPS_MODEL, "sampler": "unipc", "stride": 10}, "stride", "only ddpm steps by stride"),
        ({"model": EPS_MODEL, "stride": 10, "spacing": "leading"}, "spacing", "give `steps`, not `stride`"),
        ({"model": EPS_MODEL, "sampler": "unipc", "steps": 301}, "steps", "at most 300"),
        ({"model": EPS_MODEL, "sampler": "plms"}, "sampler", "Input should be"),
    ],
)
def test_a_sampler_that_cannot_work_is_a_422_naming_the_field(client, body, loc, words):
    error = error_of(client.post("/v1/jobs", json={"kind": "sample", "prompt": "1", "n": 1, **body}), 422)
    assert loc in [d["loc"][-1] for d in error["details"]], error
    assert words in error["message"] + str(error["details"]), error


def test_a_sampler_on_a_loop_without_one_is_a_422(client):
    blur = {"kind": "denoise", "model": EPS_MODEL, "image": DIGIT, "method": "blur", "sampler": "ddim"}
    assert "only iterative denoising" in error_of(client.post("/v1/jobs", json=blur), 422)["message"]
    one_call = {"kind": "denoise", "model": "mnist-denoiser", "image": DIGIT, "method": "one_step", "eta": 0.5}
    assert error_of(client.post("/v1/jobs", json=one_call), 422)["details"][0]["loc"][-1] == "eta"


def test_cancel_stops_a_second_order_run_at_its_next_step(client):
    body = {"kind": "sample", "model": EPS_MODEL, "prompt": "3", "n": 64, "sampler": "heun", "steps": 300}
    response = submit(client, body, wait=0)
    assert response.status_code == 202, response.text
    job = response.json()
    wait_until(
        lambda: (client.get(f"/v1/jobs/{job['id']}").json()["progress"] or {}).get("step", 0) >= 2, 60, "2 steps"
    )
    assert client.delete(f"/v1/jobs/{job['id']}").status_code == 202
    final = finish(client, job["id"], 30)
    assert final["status"] == "canceled" and final["progress"]["step"] < 300


@contextmanager
def worker(running: Stack) -> Iterator[None]:
    proc = running.start_worker()
    try:
        yield
    finally:
        stop(proc)


def test_jobs_batch_together_only_with_the_same_sampler(redis_url, tmp_path_factory, api_key):
    root = tmp_path_factory.mktemp("checkpoints")
    save_tiny_checkpoints(root)
    with (
        running_stack(redis_url, tmp_path_factory.mktemp("batching"), workers=0, CHECKPOINTS_DIR=str(root)) as s,
        httpx.Client(base_url=s.url, headers={"Authorization": f"Bearer {api_key}"}, timeout=60) as c,
    ):
        base: dict[str, Any] = {"kind": "sample", "model": EPS_MODEL, "n": 1, "steps": 6}
        bodies = [
            {**base, "prompt": "1", "seed": 1, "sampler": "dpmpp_2m"},
            {**base, "prompt": "2", "seed": 2, "sampler": "unipc"},
            {**base, "prompt": "3", "seed": 3, "sampler": "dpmpp_2m"},
            {**base, "prompt": "4", "seed": 4, "sampler": "ddim", "eta": 0.3},
            {**base, "prompt": "5", "seed": 5, "sampler": "ddim", "eta": 0.6},
        ]
        ids = [submit(c, body, wait=0).json()["id"] for body in bodies]
        time.sleep(0.2)
        with worker(s):
            jobs = [finish(c, job_id, 120) for job_id in ids]
        assert [j["status"] for j in jobs] == ["succeeded"] * 5
        assert jobs[0]["result"]["batch"] == jobs[2]["result"]["batch"] == {"jobs": 2, "images": 2}
        for job in (jobs[1], jobs[3], jobs[4]):  # another sampler, another eta: alone
            assert "batch" not in job["result"], job["params"]
