"""Distillation as a `train` job (docs/training.md, "Distillation"), end to end: real Redis, the real API, a real
`mnist` worker and a real `train` worker, over HTTP.

Tiny runs (a hundred pairs or digits, a few teacher steps, an epoch or two) from the shipped teachers: what is checked
is what must hold for any weights: the stages and progress, the artifacts, the student served at once with its own
defaults (its steps and sampler, guidance 1), a timed-out run resumed from its last epoch, and the rules at the door.
"""

import io
import json
import signal
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from PIL import Image

from tests.helpers import (
    TEST_KEYS,
    Stack,
    artifact,
    client_for,
    decode,
    finish,
    job_of,
    names,
    running_stack,
    stop,
    succeeded,
    wait_until,
)

ENV = {"OMP_NUM_THREADS": "1"}  # one thread per process: the tests' processes share two cores
CHECKPOINT = {"config.json", "diffusion_pytorch_model.safetensors"}
REFLOW = {
    "kind": "train",
    "name": "flow-2step",
    "distill": {"teacher": "mnist-flow", "method": "reflow", "steps": 2, "teacher_steps": 8, "pairs": 96},
    "epochs": 2,
    "batch_size": 32,
    "seed": 1,
}
PROGRESSIVE = {
    "kind": "train",
    "name": "ddpm-2step",
    "dataset": "mnist-5k",
    "limit": 64,
    "distill": {"teacher": "mnist-ddpm", "method": "progressive", "steps": 2, "teacher_steps": 8},
    "epochs": 1,  # per round: 8 -> 4 -> 2 steps, two rounds
    "batch_size": 32,
    "seed": 1,
}


@pytest.fixture(scope="module")
def stack(redis_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    with running_stack(redis_url, tmp_path_factory.mktemp("distill-stack"), **ENV) as s:
        s.start_worker("train")
        yield s


@pytest.fixture(scope="module")
def owner(stack: Stack) -> Iterator[httpx.Client]:
    with client_for(stack, TEST_KEYS[-150]) as c:
        yield c


def watched(client: httpx.Client, body: dict[str, Any], timeout: float = 120) -> tuple[dict[str, Any], list[str]]:
    """The job of `body` once it ends, and the progress stages seen on the way (in order, each once)."""
    response = client.post("/v1/jobs", json=body)
    assert response.status_code == 202, response.text
    job_id, stages = response.json()["id"], list[str]()
    deadline = time.monotonic() + timeout
    while True:
        job = job_of(client, job_id)
        stage = (job["progress"] or {}).get("stage")
        if stage and (not stages or stages[-1] != stage):
            stages.append(stage)
        if job["status"] in ("succeeded", "failed", "canceled", "timed_out") or time.monotonic() > deadline:
            return job, stages
        time.sleep(0.02)


def error_of(response: httpx.Response) -> dict[str, Any]:
    assert response.status_code == 422, response.text
    error: dict[str, Any] = response.json()["error"]
    return error


@pytest.fixture(scope="module")
def reflowed(owner: httpx.Client) -> tuple[dict[str, Any], list[str]]:
    return watched(owner, REFLOW)


def test_a_reflow_job_draws_pairs_then_trains_a_student_served_at_its_steps(owner, reflowed):
    job, stages = reflowed
    assert job["status"] == "succeeded", job
    assert stages[0] == "pairs" and "training" in stages, stages
    assert stages.index("pairs") < stages.index("training")
    assert names(job) == {"loss.png", "metrics.json", "epoch_1.png", "epoch_2.png", "frames.gif"} | CHECKPOINT
    for name in ("loss.png", "epoch_2.png"):
        Image.open(io.BytesIO(artifact(owner, job, name))).verify()
    grid = Image.open(io.BytesIO(artifact(owner, job, "epoch_2.png")))
    assert grid.width > 28 * 10  # a column per class
    progress = job["progress"]
    assert progress["stage"] == "training" and progress["epochs_done"] == progress["epochs"] == 2
    assert progress["loss"] > 0
    result = job["result"]
    assert result["num_images"] == 96 and result["steps"] == 2 * 3  # 96 pairs, batch 32
    assert result["quality"]["steps"] == 2 and result["quality"]["guidance_scale"] == 1.0
    assert job["params"]["objective"] == "flow" and job["params"]["conditioning"] == "class"
    assert job["params"]["distill"]["guidance_scale"] == 5.0  # the teacher's, filled in at the door
    metrics = json.loads(artifact(owner, job, "metrics.json"))
    assert metrics["epochs_done"] == 2 and metrics["quality"] == result["quality"]

    model = owner.get("/v1/models/flow-2step").json()
    assert model["defaults"] == {"steps": 2, "guidance_scale": 1.0, "sampler": "euler"}
    assert model["schedule"] == {"type": "flow", "steps": 2} and model["objective"] == "flow"
    assert model["description"].startswith("mnist-flow distilled by reflow to 2 steps")
    assert model["distilled_from"]["teacher"] == "mnist-flow" and model["distilled_from"]["method"] == "reflow"
    assert model["classes"] == [str(d) for d in range(10)]

    sample = {"kind": "sample", "model": "flow-2step", "prompt": "3", "n": 2, "seed": 4}
    done = succeeded(owner.post("/v1/jobs", json=sample, headers={"Prefer": "wait=60"}))
    assert done["params"]["steps"] == 2 and done["params"]["guidance_scale"] == 1.0
    assert done["params"]["sampler"] == "euler"
    assert decode(artifact(owner, done, "image_0.png")).shape == (28, 28)


def test_a_progressive_job_trains_a_student_sampled_with_ddim(owner):
    job, stages = watched(owner, PROGRESSIVE)
    assert job["status"] == "succeeded", job
    assert "pairs" not in stages and "training" in stages
    assert {"noising.png", "loss.png", "metrics.json", "epoch_1.png", "epoch_2.png", "frames.gif"} | CHECKPOINT == (
        names(job)
    )
    assert job["progress"]["epochs"] == 2  # one epoch per round, two rounds
    assert job["result"]["steps"] == 2 * 2 and job["result"]["quality"]["steps"] == 2

    model = owner.get("/v1/models/ddpm-2step").json()
    assert model["defaults"] == {"steps": 2, "guidance_scale": 1.0, "sampler": "ddim", "spacing": "trailing"}
    assert model["schedule"]["type"] == "ddpm" and model["schedule"]["num_timesteps"] == 300
    assert model["description"].startswith("mnist-ddpm distilled by progressive to 2 steps")

    sample = {"kind": "sample", "model": "ddpm-2step", "prompt": "7", "n": 2, "seed": 4}
    done = succeeded(owner.post("/v1/jobs", json=sample, headers={"Prefer": "wait=60"}))
    params = done["params"]
    assert (params["sampler"], params["steps"], params["spacing"], params["guidance_scale"]) == (
        "ddim",
        2,
        "trailing",
        1.0,
    )
    assert decode(artifact(owner, done, "image_0.png")).shape == (28, 28)


def test_a_timed_out_distillation_resumes_after_its_last_epoch_to_the_same_model(stack):
    body = {
        **REFLOW,
        "name": "resumed-2step",
        "distill": {**REFLOW["distill"], "teacher_steps": 4, "pairs": 256},
        "epochs": 6,
        "sample_epochs": [6],
        "timeout_s": 8,
    }
    with client_for(stack, TEST_KEYS[-151]) as c:
        first, _ = watched(c, body)
        assert first["status"] == "timed_out", first
        assert first["progress"]["epochs_done"] >= 1, first["progress"]
        job = first
        for _ in range(5):  # each attempt goes on after the last saved epoch: a few at most reach the end
            assert c.post(f"/v1/jobs/{first['id']}/resume").status_code == 202
            job = finish(c, first["id"], 60)
            if job["status"] != "timed_out":
                break
        assert job["status"] == "succeeded", job
        assert job["attempts"] >= 2 and job["result"]["resumed"] is True
        assert job["result"]["start_epoch"] >= 1 and len(job["result"]["epoch_losses"]) == 6
        model = c.get("/v1/models/resumed-2step").json()
        assert model["job_id"] == first["id"] and model["defaults"]["steps"] == 2
        sample = {"kind": "sample", "model": "resumed-2step", "prompt": "1", "seed": 2}
        assert succeeded(c.post("/v1/jobs", json=sample, headers={"Prefer": "wait=60"}))["params"]["steps"] == 2


@pytest.mark.slow
def test_a_killed_distillation_worker_resumes_from_its_last_epoch_with_the_same_pairs(redis_url, tmp_path):
    body = {
        **REFLOW,
        "name": "killed-2step",
        "distill": {**REFLOW["distill"], "teacher_steps": 4, "pairs": 256},
        "epochs": 3,
        "sample_epochs": [3],
        "seed": 5,
    }
    with running_stack(redis_url, tmp_path, workers=0, **ENV) as stack, client_for(stack, TEST_KEYS[-153]) as c:
        trainer = stack.start_worker("train")
        job = c.post("/v1/jobs", json=body).json()
        wait_until(
            lambda: (
                (p := job_of(c, job["id"])["progress"])
                and p["stage"] == "training"
                and p["epochs_done"] >= 1
                and p["epoch"] == 2
            ),
            120,
            "the first epoch to be saved",
            every=0.05,
        )
        stop(trainer, signal.SIGKILL)  # the real worker process, mid-epoch 2
        stack.start_worker("train")
        final = finish(c, job["id"], 120)
        assert final["status"] == "succeeded", final
        assert final["attempts"] == 2 and final["result"]["resumed"] is True and final["result"]["start_epoch"] == 1

        # the same run uninterrupted learns the same: the retry read the kept pairs and the state
        straight = c.post("/v1/jobs", json={**body, "name": "straight-2step"}).json()
        uninterrupted = finish(c, straight["id"], 120)
        assert uninterrupted["status"] == "succeeded"
        assert uninterrupted["result"]["epoch_losses"] == pytest.approx(final["result"]["epoch_losses"], rel=1e-4)


@pytest.mark.parametrize(
    ("body", "loc"),
    [
        ({"distill": {"teacher": "mnist-flow", "method": "progressive", "steps": 2}}, ["body", "distill", "method"]),
        ({"distill": {"teacher": "mnist-ddpm", "method": "reflow", "steps": 2}}, ["body", "distill", "method"]),
        ({"distill": {"teacher": "no-such-model", "method": "reflow", "steps": 2}}, ["body", "distill", "teacher"]),
        ({"distill": {"teacher": "deepfloyd-if", "method": "progressive", "steps": 2}}, ["body", "distill", "teacher"]),
        (
            {"distill": {"teacher": "mnist-flow", "method": "reflow", "steps": 2}, "hidden": 8},
            ["body", "train", "hidden"],
        ),
        (
            {"distill": {"teacher": "mnist-flow", "method": "reflow", "steps": 2}, "conditioning": "time"},
            ["body", "conditioning"],
        ),
        (
            {"distill": {"teacher": "mnist-ddpm", "method": "progressive", "steps": 2, "teacher_steps": 6}},
            ["body", "train", "distill", "teacher_steps"],
        ),
    ],
)
def test_a_distillation_the_teacher_cannot_give_is_422_naming_the_field(client, body, loc):
    progressive = body["distill"]["method"] == "progressive"
    full = {"kind": "train", "name": "student", **({"dataset": "mnist-5k"} if progressive else {}), **body}
    error = error_of(client.post("/v1/jobs", json=full))
    assert loc in [d["loc"] for d in error["details"]], error


def test_an_invalid_distill_is_the_only_error_reported(client):
    body = {"kind": "train", "name": "student", "distill": {"teacher": "mnist-flow", "method": "rectify", "steps": 2}}
    error = error_of(client.post("/v1/jobs", json=body))
    assert [d["loc"] for d in error["details"]] == [["body", "train", "distill", "method"]], error


def test_another_keys_model_is_no_teacher(stack, reflowed):
    assert reflowed[0]["status"] == "succeeded"
    own = {"kind": "train", "name": "student", "distill": {"teacher": "flow-2step", "method": "reflow", "steps": 1}}
    with client_for(stack, TEST_KEYS[-152]) as other:
        error = error_of(other.post("/v1/jobs", json=own))
        assert error["details"][0]["loc"] == ["body", "distill", "teacher"] and "flow-2step" in error["message"]
