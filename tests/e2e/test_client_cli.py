"""The client commands (`diffusion-jobs submit/jobs/cancel/models`) run for real against the real stack."""

import os
import re
import signal
import subprocess

import numpy as np
import pytest

from diffusion_jobs.client import Client
from diffusion_jobs.client_errors import ValidationError
from tests.helpers import cli, decode, png, stop, wait_until

DIGIT = "dataset:mnist-5k:0"


@pytest.fixture
def env(stack, api_key):
    return {**os.environ, "DIFFUSION_JOBS_URL": stack.url, "DIFFUSION_JOBS_KEY": api_key}


@pytest.fixture(autouse=True)
def in_tmp(tmp_path, monkeypatch):
    """Commands run in the test's folder: a `submit` without `--out` saves into the current one."""
    monkeypatch.chdir(tmp_path)


@pytest.fixture
def api(stack, api_key):
    with Client(stack.url, api_key) as c:
        yield c


def run(env, *args, cwd=None, timeout=180):
    return subprocess.run(cli(*args), env=env, cwd=cwd, capture_output=True, text=True, timeout=timeout)


def running_job(api):
    """The caller's job once it runs."""
    return wait_until(lambda: next((j for j in api.jobs().jobs if j.status == "running"), None), 60, "a running job")


def test_submit_shows_progress_and_saves_every_artifact(env, tmp_path):
    out = tmp_path / "digits"
    args = ["--model", "mnist-ddpm", "--prompt", "3", "--n", "2", "--steps", "20", "--seed", "1", "--out", str(out)]
    done = run(env, "submit", "sample", *args)
    assert done.returncode == 0, done.stderr
    job_id = re.search(r"job (\S+) queued", done.stderr).group(1)
    assert {p.name for p in out.iterdir()} == {"image_0.png", "image_1.png", "grid.png"}
    assert decode((out / "image_0.png").read_bytes()).shape == (28, 28)
    assert str(out) in done.stdout and "saved 3 artifact(s)" in done.stdout
    assert re.search(rf"{job_id}\S* sampling:\s+20/20 \|", done.stderr), done.stderr  # the bar: stage and step
    assert "HTTP Request" not in done.stderr  # httpx's request log stays out of the way


def test_submit_uploads_a_file_and_takes_lists_both_ways(env, api, tmp_path):
    pixels = np.zeros((28, 28), dtype=np.uint8)
    pixels[4:24, 10:18] = 200
    (tmp_path / "bar.png").write_bytes(png(pixels))
    done = run(env, "submit", "noise", "--model", "mnist-ddpm", "--image", "bar.png", "--sigmas", "0", "--sigmas",
               "[0.5, 1]", cwd=tmp_path)  # fmt: skip
    assert done.returncode == 0, done.stderr
    [job] = api.jobs().jobs
    assert job.params["sigmas"] == [0.0, 0.5, 1.0] and "upload_id" in job.params["image"]
    saved = tmp_path / job.id  # the default --out
    assert {p.name for p in saved.iterdir()} >= {"image_0.png", "image_1.png", "image_2.png"}
    assert np.array_equal(decode((saved / "image_0.png").read_bytes()), pixels / 255)


def test_submit_runs_the_sampler_and_steps_it_names(env, api, tmp_path):
    args = ["--model", "mnist-ddpm", "--prompt", "3", "--n", "1", "--seed", "2", "--out", str(tmp_path / "out")]
    done = run(env, "submit", "sample", *args, "--sampler", "dpmpp_2m", "--steps", "10", "--spacing", "trailing")
    assert done.returncode == 0, done.stderr
    [job] = api.jobs().jobs
    assert job.status == "succeeded"
    assert (job.params["sampler"], job.params["steps"], job.params["spacing"]) == ("dpmpp_2m", 10, "trailing")
    assert re.search(rf"{job.id}\S* sampling:\s+10/10 \|", done.stderr), done.stderr  # ten solver steps
    assert decode((tmp_path / "out" / "image_0.png").read_bytes()).shape == (28, 28)


def test_a_sampler_the_model_cannot_run_is_the_apis_422(env, api):
    body = {"model": "mnist-flow", "sampler": "dpmpp_2m"}  # an eps solver on a flow model
    with pytest.raises(ValidationError) as refusal:
        api.submit("sample", **body)
    assert "sampler" in refusal.value.message
    refused = run(env, "submit", "sample", "--model", "mnist-flow", "--sampler", "dpmpp_2m")
    assert refused.returncode == 2
    assert f"error: {refusal.value.message}" in refused.stderr
    eta = run(env, "submit", "sample", "--model", "mnist-ddpm", "--sampler", "dpmpp_2m", "--eta", "0.5")
    assert eta.returncode == 2 and "eta" in eta.stderr  # eta is ddim's alone
    unknown = run(env, "submit", "sample", "--model", "mnist-ddpm", "--sampler", "plms")
    assert unknown.returncode == 2 and "--sampler: invalid choice" in unknown.stderr  # argparse, from the enum
    assert api.jobs().jobs == []


def test_bad_parameters_exit_non_zero_naming_the_field(env, api):
    refused = run(env, "submit", "noise", "--model", "mnist-ddpm", "--image", DIGIT, "--sigmas", "-1")
    assert refused.returncode == 2
    assert "sigmas" in refused.stderr and "greater than or equal to 0" in refused.stderr
    unknown = run(env, "submit", "sample", "--model", "no-such-model")
    assert unknown.returncode == 2 and "model" in unknown.stderr
    typo = run(env, "submit", "sample", "--model", "mnist-ddpm", "--class-label", "seven")
    assert typo.returncode == 2 and "--class-label" in typo.stderr
    missing = run(env, "submit", "noise", "--model", "mnist-ddpm", "--image", "no-such-file.png")
    assert missing.returncode == 2 and "--image" in missing.stderr
    assert api.jobs().jobs == []  # nothing reached the queue
    stranger = run({**env, "DIFFUSION_JOBS_KEY": "wrong"}, "models")
    assert stranger.returncode == 2 and "key" in stranger.stderr.lower()


def test_a_failing_job_exits_non_zero_with_its_message(stack, env):
    stack.start_worker("train")
    options = {"name": "diverges", "dataset": "mnist-5k", "objective": "flow", "lr": "1e8", "grad-clip": "0"}
    options |= {"epochs": "2", "hidden": "8", "limit": "200", "batch-size": "32", "sample-steps": "20"}
    args = [word for name, value in options.items() for word in (f"--{name}", value)]
    failed = run(env, "submit", "train", *args, timeout=240)
    assert failed.returncode == 1, failed.stderr
    assert "failed: training_diverged" in failed.stderr and "lower `lr`" in failed.stderr


def test_a_canceled_job_exits_non_zero_and_cancel_says_so(env, api, tmp_path):
    args = ["--model", "mnist-ddpm", "--prompt", "3", "--n", "24", "--seed", "7", "--out", str(tmp_path)]
    watching = subprocess.Popen(cli("submit", "sample", *args), env=env, stderr=subprocess.PIPE, text=True)
    try:
        job = running_job(api)
        canceled = run(env, "cancel", job.id)
        assert canceled.returncode == 0 and canceled.stdout.startswith(job.id)
        _, stderr = watching.communicate(timeout=60)
        assert watching.returncode == 1
        assert f"job {job.id} canceled" in stderr
    finally:
        stop(watching)


def test_ctrl_c_stops_watching_and_the_job_goes_on(env, api):
    args = ["--model", "mnist-ddpm", "--prompt", "4", "--n", "24", "--seed", "8"]
    watching = subprocess.Popen(cli("submit", "sample", *args), env=env, stderr=subprocess.PIPE, text=True)
    try:
        job = running_job(api)
        watching.send_signal(signal.SIGINT)
        _, stderr = watching.communicate(timeout=30)
        assert watching.returncode == 130
        assert f"job {job.id} goes on" in stderr
        assert api.get(job).status in ("running", "succeeded")
    finally:
        stop(watching)
        api.cancel(job)  # frees the worker for the next test


def test_jobs_and_models_print_tables(env, api):
    job = api.wait(api.submit("noise", model="mnist-ddpm", image={"dataset": "mnist-5k", "index": 1}, sigmas=[0.1]))
    listed = run(env, "jobs")
    assert listed.returncode == 0
    header, row = listed.stdout.splitlines()
    assert header.split() == ["ID", "KIND", "MODEL", "STATUS", "PROGRESS", "CREATED"]
    assert row.split()[:4] == [job.id, "noise", "mnist-ddpm", "succeeded"]
    assert run(env, "jobs", "--status", "failed").stdout.splitlines()[1:] == []
    models = run(env, "models")
    assert models.returncode == 0
    assert re.search(r"^mnist-ddpm\s+yes\s", models.stdout, re.MULTILINE), models.stdout
