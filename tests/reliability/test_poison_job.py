"""Fault 7 of docs/operations/reliability.md: a poison job (its model's checkpoint went bad in the store, so the
model code raises on every attempt) fails after a bounded number of attempts with a readable error; the same worker
serves the next job."""

import redis

from tests.helpers import TEST_KEYS, client_for, finish, running_stack, submit

TINY_DENOISER = {
    "kind": "train",
    "name": "soon-corrupt",
    "dataset": "mnist-5k",
    "objective": "denoiser",
    "hidden": 8,
    "epochs": 1,
    "limit": 200,
    "batch_size": 32,
    "seed": 1,
}
DIGIT = {"dataset": "mnist-5k", "index": 7}


def test_a_poison_job_fails_after_its_attempts_and_the_worker_serves_the_next(redis_url, tmp_path, measured):
    with (
        running_stack(redis_url, tmp_path, JOB_RETRIES="2", OMP_NUM_THREADS="1") as stack,
        client_for(stack, TEST_KEYS[-50]) as c,
    ):
        stack.start_worker("train")
        trained = submit(c, TINY_DENOISER, wait=120).json()
        assert trained["status"] == "succeeded", trained

        conn = redis.Redis.from_url(stack.env["REDIS_URL"])
        weights = [k for k in conn.scan_iter("dj:blob:models/*/soon-corrupt/*/diffusion_pytorch_model.safetensors")]
        assert len(weights) == 1
        conn.hset(weights[0], "data", b"\x00not a safetensors file" * 100)  # the stored checkpoint goes bad

        worker = stack.workers[0]  # the mnist worker: it has never loaded this model
        poison = submit(c, {"kind": "denoise", "model": "soon-corrupt", "method": "one_step", "image": DIGIT}, wait=60)
        job = finish(c, poison.json()["id"], 60)
        assert job["status"] == "failed", job
        assert job["attempts"] == 3  # the first and JOB_RETRIES more, then no more
        assert job["error"]["type"] == "model_unreadable"
        assert job["error"]["message"] == (
            "the checkpoint of model 'soon-corrupt' could not be read (OSError); train it again"
        )

        after = submit(c, {"kind": "noise", "model": "mnist-ddpm", "image": DIGIT, "sigmas": [0.2]}).json()
        assert after["status"] == "succeeded", after
        assert worker.poll() is None  # the same process, still serving
        measured(attempts=job["attempts"], error=job["error"]["message"][:120], next_job=after["status"])
